using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Storage.Groups;

/// <summary>What a redrive did.</summary>
public sealed record RedriveResult(int Moved, int Skipped);

/// <summary>
/// Moves dead letters back to the topics they came from. The dead-letter topic is read through the reserved group
/// <c>__redrive</c>, so each dead letter is redriven once: it is appended (durably) to its original topic as a new
/// message, with the broker's reserved headers removed but its priority (the producer's own are kept), and only then acknowledged in the dead-letter topic. A crash in
/// between can redrive a message twice, never lose it. Dead letters whose original topic no longer exists are
/// skipped and stay in the dead-letter topic.
/// </summary>
public static class DeadLetterRedrive
{
    /// <summary>The reserved group that tracks what was redriven.</summary>
    public const string GroupName = Topic.ReservedGroupPrefix + "redrive";

    /// <summary>
    /// Moves up to <paramref name="maxMessages"/> dead letters (all when 0 or less) back to the topics they came from, or
    /// all of them to <paramref name="targetTopic"/> when it is given (it must exist).
    /// </summary>
    public static async Task<RedriveResult> RedriveAsync(TopicStore store, string deadLetterTopic, int maxMessages, CancellationToken cancellationToken,
        string? targetTopic = null)
    {
        if (maxMessages <= 0)
            maxMessages = int.MaxValue;
        // Each moved letter would be a new letter to move, without end.
        if (targetTopic == deadLetterTopic)
            Throw.Broker(BrokerErrorCode.InvalidRequest, $"a redrive cannot move the dead letters of '{deadLetterTopic}' to that same topic");
        var source = await store.GetTopicAsync(deadLetterTopic, cancellationToken).ConfigureAwait(false);
        var target = targetTopic is null ? null : await store.GetTopicAsync(targetTopic, cancellationToken).ConfigureAwait(false);
        var (group, _) = await source.GetOrCreateGroupAsync(GroupName, GroupStart.Earliest, null, cancellationToken, internalGroup: true)
            .ConfigureAwait(false);
        var member = group.Join(maxInFlight: 1_000, visibilityTimeout: TimeSpan.FromMinutes(5));
        int moved = 0;
        var unroutable = new List<DeliveryRef>();
        try
        {
            while (moved + unroutable.Count < maxMessages)
            {
                var batch = await group.FetchAvailableAsync(member, Math.Min(500, maxMessages - moved - unroutable.Count), cancellationToken).ConfigureAwait(false);
                if (batch.Count == 0)
                    break;
                foreach (var delivery in batch)
                {
                    var reference = new DeliveryRef(delivery.Offset, delivery.Token);
                    var destination = target ?? await OriginalTopicAsync(store, delivery.Message, cancellationToken).ConfigureAwait(false);
                    if (destination is null)
                    {
                        // Held until the end, so the loop does not fetch it again; then released uncounted.
                        unroutable.Add(reference);
                        continue;
                    }
                    var headers = OriginalHeaders(delivery.Message.Headers);
                    await destination.AppendAsync([new AppendMessage(delivery.Message.Key, headers, delivery.Message.Payload)], trusted: true).ConfigureAwait(false);
                    await group.SettleAsync(new SettleAction.Ack(), [reference]).ConfigureAwait(false);
                    moved++;
                }
            }
        }
        finally
        {
            if (unroutable.Count > 0)
                await group.SettleAsync(new SettleAction.Release(), unroutable).ConfigureAwait(false);
            group.Leave(member);
        }
        return new RedriveResult(moved, unroutable.Count);
    }

    /// <summary>
    /// The headers the producer gave: all but the broker's reserved ones. A dead letter written before those were
    /// reserved has no reserved header; its dead-letter headers are the ones starting <c>dlq-</c>.
    /// </summary>
    private static List<KeyValuePair<string, string>> OriginalHeaders(IReadOnlyList<KeyValuePair<string, string>> headers) =>
        IsLegacy(headers)
            ? headers.Where(h => !h.Key.StartsWith(DeadLetterRouter.Headers.LegacyPrefix, StringComparison.Ordinal)).ToList()
            // The message's priority goes back with it; its id does not (a redrive is a new message, not a duplicate).
            : headers.Where(h => !ReservedHeaders.IsReserved(h.Key) || ReservedHeaders.IsCopied(h.Key)).ToList();

    private static bool IsLegacy(IReadOnlyList<KeyValuePair<string, string>> headers) =>
        !headers.Any(h => h.Key == DeadLetterRouter.Headers.OriginalTopic);

    private static async Task<Topic?> OriginalTopicAsync(TopicStore store, StoredMessage message, CancellationToken cancellationToken)
    {
        string originalTopic = IsLegacy(message.Headers) ? DeadLetterRouter.Headers.LegacyOriginalTopic : DeadLetterRouter.Headers.OriginalTopic;
        foreach (var header in message.Headers)
        {
            if (header.Key == originalTopic)
            {
                try
                {
                    return await store.GetTopicAsync(header.Value, cancellationToken).ConfigureAwait(false);
                }
                catch (BrokerException)
                {
                    return null;
                }
            }
        }
        return null;
    }
}
