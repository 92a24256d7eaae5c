using System.Text;

namespace Broker.Server.Sqs;

/// <summary>The characters SQS allows in bodies and attribute values (and XML can carry).</summary>
internal static class SqsText
{
    public static bool IsAllowed(int c) =>
        c is 0x9 or 0xA or 0xD || c is >= 0x20 and <= 0xD7FF || c is >= 0xE000 and <= 0xFFFD || c is >= 0x10000 and <= 0x10FFFF;

    public static bool IsValid(string text)
    {
        foreach (var rune in text.EnumerateRunes())
        {
            if (!IsAllowed(rune.Value))
                return false;
        }
        return true;
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
