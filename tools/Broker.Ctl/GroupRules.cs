using System.Globalization;
using Broker.Protocol.V1;

namespace Broker.Ctl;

/// <summary>A group's delivery rules in one short line, for the describe table (the JSON output has them in full).</summary>
internal static class GroupRules
{
    public static string Describe(GroupSettings? settings)
    {
        if (settings is null)
            return "";
        var parts = new List<string> { $"lease {Duration(settings.VisibilityTimeoutMs)}" };
        parts.Add(settings.MaxDeliveries == 0 ? "no delivery limit" : $"{settings.MaxDeliveries} deliveries → {settings.DeadLetterTopic}".TrimEnd(' ', '→'));
        if (settings.RetryBackoff is { } backoff)
        {
            string jitter = backoff.Jitter > 0 ? $", jitter {backoff.Jitter.ToString("0.##", CultureInfo.InvariantCulture)}" : "";
            parts.Add($"backoff {Duration(backoff.InitialMs)}…{Duration(backoff.MaxMs)} ×{backoff.Multiplier.ToString("0.##", CultureInfo.InvariantCulture)}{jitter}");
        }
        if (settings.OrderedByKey)
            parts.Add("ordered by key");
        if (settings.PriorityLevels > 1)
            parts.Add($"{settings.PriorityLevels} priority levels");
        if (settings.NewestFirst)
            parts.Add("newest first");
        if (settings.Filter is { } filter)
        {
            // Any key pattern, and every header.
            var conditions = new List<string>();
            if (filter.KeyPatterns.Count > 0)
                conditions.Add($"key {string.Join(" or ", filter.KeyPatterns)}");
            conditions.AddRange(filter.Headers.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => $"{h.Key}={h.Value}"));
            parts.Add($"only {string.Join(" and ", conditions)}");
        }
        return string.Join("; ", parts);
    }

    private static string Duration(uint milliseconds) =>
        milliseconds % 1000 != 0 ? $"{milliseconds} ms"
        : milliseconds % 60_000 != 0 || milliseconds == 0 ? $"{milliseconds / 1000} s"
        : $"{milliseconds / 60_000} min";
}
