using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// Naming rules for topics and consumer groups: 1 to 200 characters of ASCII letters, digits, '.', '_' and '-',
/// and not "." or "..". The rules keep a name safe as a folder name on every file system, and leave room for
/// suffixes such as ".dlq" within common 255-byte name limits.
/// </summary>
public static class EntityName
{
    /// <summary>Longest allowed name.</summary>
    public const int MaxLength = 200;

    /// <summary>Returns null when <paramref name="name"/> is valid, else the reason it is not.</summary>
    public static string? Validate(string? name)
    {
        if (string.IsNullOrEmpty(name))
            return "name must not be empty";
        if (name.Length > MaxLength)
            return $"name is {name.Length} characters long; at most {MaxLength} are allowed";
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
    public static void EnsureValid(string? name, string what)
    {
        string? problem = Validate(name);
        if (problem is not null)
            Throw.Broker(BrokerErrorCode.InvalidName, $"invalid {what} name: {problem}");
    }

    private static bool IsAllowed(char c) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '.' or '_' or '-';
}
