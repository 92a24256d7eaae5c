using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;

namespace Broker.Ctl;

/// <summary>Human tables by default; with --json one JSON document per command (one object per line for streams).</summary>
internal sealed class Output(bool json, IAnsiConsole console)
{
    public bool Json => json;

    public void Table(string[] columns, IEnumerable<object?[]> rows, JsonNode document)
    {
        if (json)
        {
            WriteJson(document);
            return;
        }
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string column in columns)
            table.AddColumn(column);
        foreach (var row in rows)
            table.AddRow(row.Select(cell => Markup.Escape(cell?.ToString() ?? "")).ToArray());
        console.Write(table);
    }

    public void Line(string text, JsonNode document)
    {
        if (json)
            WriteJson(document);
        else
            console.MarkupLine(Markup.Escape(text));
    }

    /// <summary>A remark under a table, for people only: with --json the document itself carries the same facts.</summary>
    public void Note(string text)
    {
        if (!json)
            console.MarkupLine(Markup.Escape(text));
    }

    public void WriteJson(JsonNode document) => Console.Out.WriteLine(document.ToJsonString(Compact));

    public void Error(string text) => Console.Error.WriteLine("brokerctl: " + text);

    // Readable text in the JSON ("a", é) rather than \u escapes: the output goes to terminals and scripts, not HTML.
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
