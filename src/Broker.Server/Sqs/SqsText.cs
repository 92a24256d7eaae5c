using System.Text;

namespace Broker.Server.Sqs;

/// <summary>The characters SQS allows in bodies and attribute values (and XML can carry).</summary>
internal static class SqsText
{
    public static bool IsAllowed(int c) =>
        c is 0x9 or 0xA or 0xD || c is >= 0x20 and <= 0xD7FF || c is >= 0xE000 and <= 0xFFFD || c is >= 0x10000 and <= 0x10FFFF;

    /// <summary>
    /// Whether every character is allowed. Run on every body sent and received: most text lies within U+0020..U+D7FF,
    /// so a vectorized scan skips to the next character outside that range and only those are decoded (a lone
    /// surrogate counts as U+FFFD, as rune enumeration gives it, and UTF-8 stores it).
    /// </summary>
    public static bool IsValid(string text)
    {
        var rest = text.AsSpan();
        while (true)
        {
            int outside = rest.IndexOfAnyExceptInRange('\u0020', '\uD7FF');
            if (outside < 0)
                return true;
            rest = rest[outside..];
            var status = Rune.DecodeFromUtf16(rest, out var rune, out int used);
            if (status == System.Buffers.OperationStatus.Done && !IsAllowed(rune.Value))
                return false;
            rest = rest[Math.Max(used, 1)..];
        }
    }

    /// <summary>
    /// The text with every character SQS does not allow replaced by U+FFFD. Sends through SQS never store one; a message
    /// published over gRPC may (control characters, binary payloads), and XML could not carry it at all.
    /// </summary>
    public static string Repaired(string text)
    {
        if (IsValid(text))
            return text;
        var repaired = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
            repaired.Append(IsAllowed(rune.Value) ? rune.ToString() : "\uFFFD");
        return repaired.ToString();
    }
}
