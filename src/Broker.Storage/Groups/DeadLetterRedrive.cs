using Broker.Storage.Errors;
using Broker.Storage.Topics;

namespace Broker.Storage.Groups;

/// <summary>What a redrive did.</summary>
public sealed record RedriveResult(int Moved, int Skipped);

/// <summary>
/// Moves dead letters back to the topics they came from. The dead-letter topic is read through the reserved group
/// <c>__redrive</c>, so each dead letter is redriven once. Letters move in batches (up to <see cref="BatchSize"/> per
/// fetch): each batch is appended to its destination topics as new messages, one append (one durable write) per
/// destination, with the broker's reserved headers removed but their priority (the producer's own headers are kept);
/// only once every append of the batch is durable are its letters acknowledged in the dead-letter topic, in one ack
/// (one group-state write). So a redrive of N letters costs about N / <see cref="BatchSize"/> commits per log instead of
/// N. A crash (or a failed append) between the appends and the ack can redrive a batch's letters twice, never lose one.
/// Dead letters whose original topic no longer exists, or is not one the caller's rule lets an unvouched letter go to,
/// are skipped and stay in the dead-letter topic.
/// </summary>
public static class DeadLetterRedrive
{
    /// <summary>The reserved group that tracks what was redriven.</summary>
    public const string GroupName = Topic.ReservedGroupPrefix + "redrive";

    /// <summary>Letters fetched, appended and acknowledged together (fewer when the store's MaxBatchMessages is lower).</summary>
    public const int BatchSize = 500;

    /// <summary>
    /// Moves up to <paramref name="maxMessages"/> dead letters (all when 0 or less) back to the topics they came from, or
    /// all of them to <paramref name="targetTopic"/> when it is given (it must exist).
    /// <paramref name="mayTakeUnvouched"/> decides where a letter the broker cannot vouch for may go: a legacy letter's
    /// <c>dlq-original-topic</c> is an ordinary header, which any producer of the dead-letter topic can write, so it
    /// names a topic of the producer's choosing; letters it refuses are skipped (they stay). The broker's own
    /// (reserved) headers cannot be written by a producer, so the topic they name is where the letter came from.
    /// </summary>
    public static async Task<RedriveResult> RedriveAsync(TopicStore store, string deadLetterTopic, int maxMessages, CancellationToken cancellationToken,
        string? targetTopic = null, Func<string, bool>? mayTakeUnvouched = null)
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
        // A destination topic's append must not exceed its batch limit (the store's, the same for every topic).
        int batchSize = Math.Min(BatchSize, store.Options.MaxBatchMessages);
        // Room for a batch besides letters held as unroutable until the end.
        var member = group.Join(maxInFlight: 1_000 + batchSize, visibilityTimeout: TimeSpan.FromMinutes(5));
        int moved = 0;
        var unroutable = new List<DeliveryRef>();
        // Original topic name to its topic (null: gone), so a batch looks each name up once.
        var destinations = new Dictionary<string, Topic?>(StringComparer.Ordinal);
        try
        {
            while (moved + unroutable.Count < maxMessages)
            {
                var batch = await group.FetchAvailableAsync(member, Math.Min(batchSize, maxMessages - moved - unroutable.Count), cancellationToken)
                    .ConfigureAwait(false);
                if (batch.Count == 0)
                    break;
                try
                {
                    moved += await MoveBatchAsync(store, group, batch, target, destinations, mayTakeUnvouched, unroutable, cancellationToken)
                        .ConfigureAwait(false);
                }
                finally
                {
                    batch.ReleaseBuffers();
                }
            }
        }
        finally
        {
            // Held until the end, so the loop does not fetch them again; then released uncounted.
            if (unroutable.Count > 0)
                await group.SettleAsync(new SettleAction.Release(), unroutable).ConfigureAwait(false);
            group.Leave(member);
        }
        return new RedriveResult(moved, unroutable.Count);
    }

    /// <summary>
    /// One batch: an append per destination topic, all under way at once, then one ack of every letter whose append is
    /// durable. When an append fails the letters of the appends that succeeded are still acknowledged (so a retry does
    /// not move them again), the failed ones stay leased until the redrive ends, and the failure is thrown.
    /// </summary>
    private static async Task<int> MoveBatchAsync(TopicStore store, ConsumerGroup group, DeliveryBatch batch, Topic? target,
        Dictionary<string, Topic?> destinations, Func<string, bool>? mayTakeUnvouched, List<DeliveryRef> unroutable, CancellationToken cancellationToken)
    {
        var byDestination = new Dictionary<Topic, (List<AppendMessage> Messages, List<DeliveryRef> Letters)>();
        foreach (var delivery in batch)
        {
            var reference = new DeliveryRef(delivery.Offset, delivery.Token);
            var destination = target
                ?? await OriginalTopicAsync(store, delivery.Message, destinations, mayTakeUnvouched, cancellationToken).ConfigureAwait(false);
            if (destination is null)
            {
                unroutable.Add(reference);
                continue;
            }
            if (!byDestination.TryGetValue(destination, out var moving))
                byDestination[destination] = moving = ([], []);
            moving.Messages.Add(new AppendMessage(delivery.Message.Key, OriginalHeaders(delivery.Message.Headers), delivery.Message.Payload));
            moving.Letters.Add(reference);
        }
        if (byDestination.Count == 0)
            return 0;
        var appends = byDestination.Select(d => (d.Value.Letters, Durable: d.Key.AppendAsync(d.Value.Messages, trusted: true))).ToList();
        try
        {
            await Task.WhenAll(appends.Select(a => a.Durable)).ConfigureAwait(false);
        }
        catch
        {
            var durable = appends.Where(a => a.Durable.IsCompletedSuccessfully).SelectMany(a => a.Letters).ToList();
            if (durable.Count > 0)
                await group.SettleAsync(new SettleAction.Ack(), durable).ConfigureAwait(false);
            throw;
        }
        var letters = appends.SelectMany(a => a.Letters).ToList();
        await group.SettleAsync(new SettleAction.Ack(), letters).ConfigureAwait(false);
        return letters.Count;
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

    private static async Task<Topic?> OriginalTopicAsync(TopicStore store, StoredMessage message, Dictionary<string, Topic?> destinations,
        Func<string, bool>? mayTakeUnvouched, CancellationToken cancellationToken)
    {
        bool legacy = IsLegacy(message.Headers);
        string originalTopic = legacy ? DeadLetterRouter.Headers.LegacyOriginalTopic : DeadLetterRouter.Headers.OriginalTopic;
        foreach (var header in message.Headers)
        {
            if (header.Key != originalTopic)
                continue;
            if (legacy && mayTakeUnvouched is not null && !mayTakeUnvouched(header.Value))
                return null;
            if (destinations.TryGetValue(header.Value, out var known))
                return known;
            Topic? found;
            try
            {
                found = await store.GetTopicAsync(header.Value, cancellationToken).ConfigureAwait(false);
            }
            catch (BrokerException)
            {
                found = null;
            }
            destinations[header.Value] = found;
            return found;
        }
        return null;
    }
}
