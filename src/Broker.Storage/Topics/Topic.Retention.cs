using Broker.Storage.Groups;
using Broker.Storage.Logs;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Topics;

/// <summary>
/// Retention by age and size (<see cref="TopicRetention"/>), run by maintenance. The rule for groups: a group with a
/// consumer subscribed, or whose last consumer left less than <see cref="StorageOptions.RetentionIdleGrace"/> ago (every
/// group counts as just left when the broker starts), is <em>live</em>, and retention never deletes a message at or
/// above its durable ack floor (its oldest unacknowledged message); a group idle for longer (abandoned, or its workers
/// stopped for longer than the grace) does not hold retention back: it is moved durably past the deleted messages
/// first, and that is logged (event 3006, information: an
/// abandoned group is moved on every round while messages keep expiring). Nor does it delete a scheduled message
/// before its time: its record holds retention back like a live group's floor. Age counts from the append (a scheduled
/// message's due copy is as old as the moment it became due).
/// So a topic with no group, a dead-letter topic never redriven and an abandoned group all give their disk back, and
/// running workers never lose a message to retention.
/// </summary>
public sealed partial class Topic
{
    private async Task ApplyRetentionAsync(TopicRetention retention)
    {
        if (retention.IsUnlimited)
            return;
        // Not while a group is created, reset or deleted: those read positions in the log.
        if (!await _groupCreation.WaitAsync(0).ConfigureAwait(false))
            return;
        try
        {
            var durable = Log.Durable;
            long begin = Log.BeginAddress;
            long limit = durable.Address;
            foreach (var group in _groups.Values)
            {
                if (group.IsLive(_options.RetentionIdleGrace))
                    limit = Math.Min(limit, group.DurableFloor().FloorAddress);
            }
            // A scheduled message not yet due is in no group's backlog yet; its record must stay.
            limit = Math.Min(limit, _schedule.LowestPendingAddress());
            if (limit <= begin)
                return;
            var (cutOffset, cutAddress) = await FindRetentionCutAsync(retention, begin, limit, durable).ConfigureAwait(false);
            if (cutAddress <= begin)
                return;
            var behind = _groups.Values.Where(g => g.Floor().FloorAddress < cutAddress).ToList();
            if (behind.Count > 0)
            {
                var reason = new Errors.BrokerException(Errors.BrokerErrorCode.GroupReset,
                    $"retention of topic '{Name}' deleted messages this group had not acknowledged; subscribe again");
                var moved = await ReplaceGroupsAsync(behind, old => MovedPast(old, cutOffset, cutAddress), reason).ConfigureAwait(false);
                foreach (var group in moved)
                    Events.RetentionMovedGroup(_logger, Name, group.Name, group.Floor().Floor, cutOffset);
            }
            // Groups ahead in memory but behind on disk make their floors durable first: truncation follows durable floors only.
            await Task.WhenAll(_groups.Values.Select(g => g.PersistFloorAsync())).ConfigureAwait(false);
            long until = _groups.IsEmpty ? cutAddress : Math.Min(cutAddress, LowestKeptAddress());
            if (until > Log.BeginAddress)
                Log.TruncateUntil(until);
        }
        finally
        {
            _groupCreation.Release();
        }
    }

    /// <summary>
    /// The first message retention keeps, as (offset, address): the first one, from the oldest, that starts within the
    /// last MaxBytes of the log and was published within MaxAge; or the one at <paramref name="limit"/> (a live group's
    /// floor), or the log's end. Only the messages to delete and one more are read, and none that size alone deletes.
    /// </summary>
    private async Task<(long Offset, long Address)> FindRetentionCutAsync(TopicRetention retention, long begin, long limit, DurablePoint durable)
    {
        long minAddress = retention.MaxBytes > 0 ? durable.Address - retention.MaxBytes : long.MinValue;
        long minTime = retention.MaxAgeMs > 0 ? _time.GetUtcNow().ToUnixTimeMilliseconds() - retention.MaxAgeMs : long.MinValue;
        long start = begin;
        if (minAddress > begin)
        {
            // Every page starts with an entry: start reading at the page holding the size limit.
            long pageMask = (1L << Layout.LogGeometry.PageSizeBits) - 1;
            start = Math.Max(begin, Math.Min(minAddress, limit) & ~pageMask);
        }
        await foreach (var (entry, length, address) in Log.ReadRangeAsync(start, durable.Address, ReportDamage).ConfigureAwait(false))
        {
            if (!MessageEntryFormat.TryDecode(entry.AsMemory(0, length), out var message))
                continue;
            if (address >= limit || (address >= minAddress && message!.AppendTimeUnixMs >= minTime))
                return (message!.Offset, Math.Min(address, limit));
        }
        return (durable.Cookie, Math.Min(durable.Address, limit));
    }

    /// <summary>
    /// An idle group's state moved past the messages retention deletes: the floor at the cut, what it knew above the cut
    /// kept (acks, delivery counts, timers). Null when the group is live again (a consumer subscribed meanwhile: left
    /// alone, and truncation stops at its floor).
    /// </summary>
    private GroupRecord? MovedPast(ConsumerGroup group, long cutOffset, long cutAddress)
    {
        if (group.IsLive(_options.RetentionIdleGrace))
            return null;
        var now = group.Snapshot();
        if (now.FloorAddress >= cutAddress)
            return null;
        return GroupRecord.Snapshot(group.Name, cutOffset, cutAddress, group.Policy, now.Offsets.Where(o => o >= cutOffset),
            [.. now.Attempts.Where(a => a.Offset >= cutOffset)], [.. now.SettleTimers.Where(t => t.Offset >= cutOffset)]);
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 3006, Level = LogLevel.Information,
            Message = "Topic {Topic}, group {Group} (no consumer subscribed): retention deleted the messages from its ack floor {Floor} up to offset {CutOffset}, acknowledged or not; the group moves on to offset {CutOffset}")]
        public static partial void RetentionMovedGroup(ILogger logger, string topic, string group, long floor, long cutOffset);
    }
}
