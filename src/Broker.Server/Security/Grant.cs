using System.Diagnostics.CodeAnalysis;

namespace Broker.Server.Security;

/// <summary>What a grant allows. <see cref="Keys"/> is creating, listing and revoking API keys: it covers every topic.</summary>
public enum Permission
{
    /// <summary>Publish to the topic (and create it by publishing, when topics are created on first use).</summary>
    Publish,
    /// <summary>Subscribe a group to the topic and settle its deliveries; read the topic with Peek.</summary>
    Consume,
    /// <summary>Create, change, purge, delete and describe the topic and its groups; peek and redrive its messages.</summary>
    Admin,
    /// <summary>Create, list and revoke API keys.</summary>
    Keys,
}

/// <summary>
/// One permission of an API key, written <c>action:topics[:groups]</c>: <c>publish:orders.*</c>,
/// <c>consume:orders:workers-*</c>, <c>admin:*</c>, <c>keys</c>, or <c>*</c> for everything. The action is
/// <c>publish</c>, <c>consume</c>, <c>admin</c>, <c>keys</c> or <c>*</c> (all four; <c>*:orders</c> is publish,
/// consume and admin on orders, key management only with <c>*</c> alone); a pattern is a name in which
/// <c>*</c> stands for any run of characters (names have no separators of their own, so <c>orders.*</c> also matches
/// <c>orders.eu.high</c>). The group pattern applies to consume only and defaults to <c>*</c>.
/// </summary>
public sealed record Grant(Permission? Action, string Topics, string Groups)
{
    /// <summary>
    /// The grant written <c>*</c> alone, the only one that includes key management: <c>*:orders</c> is every action on
    /// orders, and <c>*:*</c> every action on every topic, neither of them managing keys (a key that may make keys may
    /// make itself any key).
    /// </summary>
    public bool Everything { get; init; }

    /// <summary>Whether this grant lets its key do <paramref name="action"/> on <paramref name="topic"/> (and <paramref name="group"/>, for consume).</summary>
    public bool Allows(Permission action, string topic, string? group)
    {
        if (Action is { } own && own != action)
            return false;
        if (action == Permission.Keys)
            return Action == Permission.Keys || Everything;
        return Glob(Topics, topic) && (action != Permission.Consume || group is null || Glob(Groups, group));
    }

    /// <summary>Whether this grant gives its key anything on <paramref name="topic"/> (a list shows the topic then).</summary>
    public bool Touches(string topic) => Action != Permission.Keys && Glob(Topics, topic);

    /// <summary>Reads <paramref name="text"/>; false with the reason for anything else.</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out Grant? grant, [NotNullWhen(false)] out string? problem)
    {
        grant = null;
        string[] parts = text.Split(':');
        Permission? action = parts[0] switch
        {
            "publish" => Permission.Publish,
            "consume" => Permission.Consume,
            "admin" => Permission.Admin,
            "keys" => Permission.Keys,
            "*" => null,
            _ => (Permission)(-1),
        };
        if (action == (Permission)(-1))
        {
            problem = $"grant '{text}': the action must be publish, consume, admin, keys or *";
            return false;
        }
        int most = action == Permission.Consume ? 3 : action is Permission.Keys ? 1 : 2;
        int least = action is Permission.Keys or null ? 1 : 2;
        if (parts.Length > most || parts.Length < least || parts.Skip(1).Any(part => !IsPattern(part)))
        {
            problem = action switch
            {
                Permission.Keys => $"grant '{text}': keys takes no topic pattern",
                Permission.Consume => $"grant '{text}': write consume:topics[:groups], patterns of A-Z a-z 0-9 . _ - and *",
                _ => $"grant '{text}': write {parts[0]}:topics, a pattern of A-Z a-z 0-9 . _ - and *",
            };
            return false;
        }
        grant = new Grant(action, parts.Length > 1 ? parts[1] : "*", parts.Length > 2 ? parts[2] : "*") { Everything = text == "*" };
        problem = null;
        return true;
    }

    private static bool IsPattern(string part) =>
        part.Length is > 0 and <= 200 && part.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '*');

    /// <summary>Whether <paramref name="name"/> matches <paramref name="pattern"/>, where <c>*</c> is any run of characters.</summary>
    internal static bool Glob(ReadOnlySpan<char> pattern, ReadOnlySpan<char> name)
    {
        // Greedy match with one backtrack point, the classic wildcard algorithm: linear for these short names.
        int p = 0, n = 0, star = -1, resume = 0;
        while (n < name.Length)
        {
            if (p < pattern.Length && pattern[p] == '*')
            {
                star = p++;
                resume = n;
            }
            else if (p < pattern.Length && pattern[p] == name[n])
            {
                p++;
                n++;
            }
            else if (star >= 0)
            {
                p = star + 1;
                n = ++resume;
            }
            else
                return false;
        }
        while (p < pattern.Length && pattern[p] == '*')
            p++;
        return p == pattern.Length;
    }
}
