using System.Text;

namespace Broker.Storage.Groups;

/// <summary>
/// Which messages a group receives (routing): those whose key matches one of <see cref="KeyPatterns"/> (any key when
/// there are none) and that carry every header of <see cref="Headers"/> with exactly that value. The others are passed
/// over: for this group they count as done, as if acknowledged, and other groups are unaffected.
/// <para>Key patterns are AMQP topic patterns over the key as UTF-8 text, in words separated by '.': <c>*</c> stands for
/// exactly one word, <c>#</c> for zero or more; a pattern without either is an exact key (direct routing). So
/// <c>orders.*.eu</c> matches <c>orders.paid.eu</c>, and <c>logs.#</c> matches <c>logs</c> and <c>logs.a.b</c>.</para>
/// </summary>
public sealed class GroupFilter : IEquatable<GroupFilter>
{
    /// <summary>Most key patterns and most headers a filter may name.</summary>
    public const int MaxPatterns = 100, MaxHeaders = 20;

    /// <summary>Longest key pattern, header name or header value, in UTF-8 bytes.</summary>
    public const int MaxTextBytes = 255;

    private readonly string[][] _patternWords;

    public GroupFilter(IReadOnlyList<string> keyPatterns, IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        KeyPatterns = [.. keyPatterns];
        Headers = [.. headers];
        _patternWords = [.. KeyPatterns.Select(p => p.Split('.'))];
    }

    public IReadOnlyList<string> KeyPatterns { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; }

    /// <summary>Whether a message with this key and these headers is for the group.</summary>
    public bool Matches(ReadOnlySpan<byte> key, IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        foreach (var (name, value) in Headers)
        {
            if (!headers.Any(h => h.Key == name && h.Value == value))
                return false;
        }
        if (_patternWords.Length == 0)
            return true;
        string[] words = Encoding.UTF8.GetString(key).Split('.');
        return _patternWords.Any(pattern => WordsMatch(pattern, words));
    }

    // AMQP topic matching in O(pattern words × key words), whatever the pattern ('#' after '#' cannot blow up):
    // matched[j] says whether the pattern so far matches the key's first j words.
    private static bool WordsMatch(string[] pattern, string[] words)
    {
        var matched = new bool[words.Length + 1];
        matched[0] = true;
        foreach (string part in pattern)
        {
            var next = new bool[words.Length + 1];
            if (part == "#")
            {
                bool any = false;
                for (int j = 0; j <= words.Length; j++)
                    next[j] = any |= matched[j];
            }
            else
            {
                for (int j = 1; j <= words.Length; j++)
                    next[j] = matched[j - 1] && (part == "*" || part == words[j - 1]);
            }
            matched = next;
        }
        return matched[words.Length];
    }

    /// <summary>Null when the filter is acceptable, else the reason.</summary>
    public string? Problem()
    {
        if (KeyPatterns.Count > MaxPatterns)
            return $"a filter names at most {MaxPatterns} key patterns";
        if (Headers.Count > MaxHeaders)
            return $"a filter names at most {MaxHeaders} headers";
        if (KeyPatterns.Any(p => p.Length == 0 || Encoding.UTF8.GetByteCount(p) > MaxTextBytes))
            return $"filter key patterns must be 1 to {MaxTextBytes} UTF-8 bytes";
        if (Headers.Any(h => h.Key.Length == 0 || Encoding.UTF8.GetByteCount(h.Key) > MaxTextBytes || Encoding.UTF8.GetByteCount(h.Value) > MaxTextBytes))
            return $"filter header names must be 1 to {MaxTextBytes} UTF-8 bytes, and values at most {MaxTextBytes}";
        if (Headers.Select(h => h.Key).Distinct(StringComparer.Ordinal).Count() != Headers.Count)
            return "a filter names each header once";
        return null;
    }

    public bool Equals(GroupFilter? other) =>
        other is not null && KeyPatterns.SequenceEqual(other.KeyPatterns) && Headers.SequenceEqual(other.Headers);

    public override bool Equals(object? obj) => Equals(obj as GroupFilter);

    public override int GetHashCode() => HashCode.Combine(KeyPatterns.Count, Headers.Count, KeyPatterns.FirstOrDefault());

    public override string ToString() =>
        $"keys [{string.Join(", ", KeyPatterns)}] headers [{string.Join(", ", Headers.Select(h => $"{h.Key}={h.Value}"))}]";
}
