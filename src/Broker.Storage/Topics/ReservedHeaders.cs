namespace Broker.Storage.Topics;

/// <summary>
/// Header names the broker keeps for itself: those starting with <see cref="Prefix"/>, in any letter case (as SQS
/// reserves <c>AWS.</c>). A producer's publish may not use them, so the headers the broker adds (dead-letter
/// provenance) can never collide with, or be mistaken for, a producer's own headers, and redrive can remove exactly
/// the broker's headers and keep every other.
/// </summary>
public static class ReservedHeaders
{
    /// <summary>The reserved prefix.</summary>
    public const string Prefix = "broker-";

    /// <summary>The producer's message id (deduplication), stored with the message and delivered with it.</summary>
    public const string MessageId = "broker-message-id";

    /// <summary>The message's priority (0 to 255, decimal), stored with it when not 0; groups with priority levels order by it.</summary>
    public const string Priority = "broker-priority";

    // The same names as UTF-8, for readers that compare an entry's bytes without decoding it.
    internal static ReadOnlySpan<byte> MessageIdUtf8 => "broker-message-id"u8;
    internal static ReadOnlySpan<byte> PriorityUtf8 => "broker-priority"u8;

    // The priority header's values, one string each, shared by every message that carries one.
    private static readonly string[] PriorityTexts =
        [.. Enumerable.Range(0, 256).Select(p => p.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    /// <summary>The priority header's value for <paramref name="priority"/> (0 to 255), without a new string.</summary>
    internal static string PriorityText(int priority) => PriorityTexts[priority];

    /// <summary>A stored priority header's value as a shared string when it is one of 0 to 255 in decimal, else decoded.</summary>
    internal static string PriorityText(ReadOnlySpan<byte> value) =>
        System.Buffers.Text.Utf8Parser.TryParse(value, out byte priority, out int consumed) && consumed == value.Length
            && PriorityTexts[priority].Length == value.Length
            ? PriorityTexts[priority]
            : System.Text.Encoding.UTF8.GetString(value);

    /// <summary>
    /// Whether a broker header goes along when the broker copies a message to another topic (a dead letter, a redrive):
    /// only the priority. The others describe the original publish (its id, its dead-letter story) and are dropped.
    /// </summary>
    public static bool IsCopied(string name) => name == Priority;

    /// <summary>True when <paramref name="name"/> is reserved for the broker.</summary>
    public static bool IsReserved(string name) => name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase);
}
