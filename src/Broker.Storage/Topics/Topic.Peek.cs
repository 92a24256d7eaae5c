namespace Broker.Storage.Topics;

public sealed partial class Topic
{
    /// <summary>
    /// Up to <paramref name="maxMessages"/> durable messages from <paramref name="fromOffset"/> on (from the oldest
    /// stored when it lies below), read without consuming: no group sees a difference. For inspecting a topic (dead
    /// letters with their headers, for one). It scans from the oldest stored message, so its cost grows with the
    /// distance from there to <paramref name="fromOffset"/>.
    /// </summary>
    public async Task<IReadOnlyList<StoredMessage>> PeekAsync(long fromOffset, int maxMessages, CancellationToken cancellationToken)
    {
        var messages = new List<StoredMessage>();
        if (maxMessages <= 0)
            return messages;
        var durable = Log.Durable;
        await foreach (var (entry, length, _) in Log.ReadRangeAsync(Log.BeginAddress, durable.Address, ReportDamage, cancellationToken).ConfigureAwait(false))
        {
            // The offset first, without a copy: the entries before fromOffset are skipped cheaply.
            if (!MessageEntryFormat.TryReadOffset(entry.AsSpan(0, length), out long offset) || offset < fromOffset)
                continue;
            // A copy: the message outlives this step of the scan.
            if (!MessageEntryFormat.TryDecode(entry.AsSpan(0, length).ToArray(), out var message))
                continue;
            messages.Add(message!);
            if (messages.Count == maxMessages)
                break;
        }
        return messages;
    }
}
