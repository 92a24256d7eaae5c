using System.Globalization;
using System.Text.Json.Nodes;

namespace Broker.Server.Sqs;

/// <summary>Typed reads of an action's input, whichever protocol it came in (numbers arrive as strings in the query one).</summary>
internal readonly struct SqsInput(JsonObject input)
{
    public string? String(string name) => input[name] switch
    {
        null => null,
        JsonValue value when value.TryGetValue(out string? text) => text,
        var other => other.ToString(),
    };

    public string Required(string name) =>
        String(name) is { Length: > 0 } value ? value : throw SqsException.MissingParameter(name);

    public int Int(string name, int defaultValue, int min, int max)
    {
        string? text = String(name);
        if (text is null)
            return defaultValue;
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
            throw SqsException.InvalidParameter($"Value {text} for parameter {name} is invalid. Reason: must be between {min} and {max}.");
        return value;
    }

    public bool Has(string name) => input[name] is not null;

    public IReadOnlyList<string> Strings(string name) =>
        input[name] is JsonArray array ? array.Select(item => item?.ToString() ?? "").ToList() : [];

    public IReadOnlyDictionary<string, string> Map(string name) =>
        input[name] is JsonObject map ? map.ToDictionary(pair => pair.Key, pair => pair.Value?.ToString() ?? "") : new Dictionary<string, string>();

    public IReadOnlyList<SqsInput> Entries() =>
        input["Entries"] is JsonArray array ? array.OfType<JsonObject>().Select(entry => new SqsInput(entry)).ToList() : [];

    /// <summary>The message attributes of a send, checked as SQS checks them.</summary>
    public IReadOnlyDictionary<string, SqsAttribute> MessageAttributes()
    {
        var attributes = new SortedDictionary<string, SqsAttribute>(StringComparer.Ordinal);
        if (input["MessageAttributes"] is not JsonObject map)
            return attributes;
        foreach (var (name, node) in map)
        {
            if (node is not JsonObject value)
                throw SqsException.InvalidParameter($"Message attribute '{name}' has no value.");
            var field = new SqsInput(value);
            string type = field.String("DataType") ?? throw SqsException.InvalidParameter($"Message attribute '{name}' must have a DataType.");
            byte[]? binary = null;
            if (field.String("BinaryValue") is { } base64)
            {
                try
                {
                    binary = Convert.FromBase64String(base64);
                }
                catch (FormatException)
                {
                    throw SqsException.InvalidParameter($"Message attribute '{name}': BinaryValue is not base64.");
                }
            }
            attributes[name] = new SqsAttribute(type, field.String("StringValue"), binary);
        }
        SqsMessageAttributes.Validate(attributes);
        return attributes;
    }
}
