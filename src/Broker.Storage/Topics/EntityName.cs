using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// Naming rules for topics and consumer groups: 1 to 200 characters of ASCII letters, digits, '.', '_' and '-',
/// and not "." or "..". The rules keep a name safe as a folder name on every file system, and leave room for
/// suffixes such as ".dlq" within common 255-byte name limits: a dead-letter topic the broker names,
/// <c>&lt;topic&gt;.dlq</c>, may be up to <see cref="MaxDeadLetterLength"/> characters, so every valid topic has a
/// valid one, and so does that dead-letter topic (<c>&lt;topic&gt;.dlq.dlq</c>).
/// </summary>
public static class EntityName
{
    /// <summary>Longest allowed name.</summary>
    public const int MaxLength = 200;

    /// <summary>What the default dead-letter topic of a group adds to its topic's name.</summary>
    public const string DeadLetterSuffix = ".dlq";

    /// <summary>
    /// Longest name of a dead-letter topic the broker names: a longest topic name and the suffix twice. Still short
    /// enough for a folder name with the 33 characters a deletion adds (<c>TopicStore.DeleteTopicAsync</c>).
    /// </summary>
    public const int MaxDeadLetterLength = MaxLength + 2 * 4;

    /// <summary>Returns null when <paramref name="name"/> is valid, else the reason it is not.</summary>
    public static string? Validate(string? name, int maxLength = MaxLength)
    {
        if (string.IsNullOrEmpty(name))
            return "name must not be empty";
        if (name.Length > maxLength)
            return $"name is {name.Length} characters long; at most {maxLength} are allowed";
        if (name is "." or "..")
            return "name must not be '.' or '..'";
        foreach (char c in name)
        {
            if (!IsAllowed(c))
                return $"name contains '{(char.IsControl(c) ? '?' : c)}'; only letters, digits, '.', '_' and '-' are allowed";
        }
        return null;
    }

    /// <summary>Throws <see cref="BrokerErrorCode.InvalidName"/> when the name breaks the rules.</summary>
    public static void EnsureValid(string? name, string what, int maxLength = MaxLength)
    {
        string? problem = Validate(name, maxLength);
        if (problem is not null)
            Throw.Broker(BrokerErrorCode.InvalidName, $"invalid {what} name: {problem}");
    }

    private static bool IsAllowed(char c) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '.' or '_' or '-';
}
