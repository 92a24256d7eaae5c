using Broker.Storage.Groups;
using Broker.Storage.Topics;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Tests;

/// <summary>
/// Recovery from damaged log files, made for real: the files of a closed store are cut or get a bit flipped, then the
/// store reopens. Invariant: the broker opens the topic, serves every committed entry that is intact, never serves a
/// damaged one as good data, reports the damage (event id, topic, log, address range), takes new appends, and
/// recovers the same way again.
/// </summary>
public sealed class DamagedLogTests : IDisposable
{
    private const int PageBits = 16;
    private const int SegmentBits = 20;
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    private StorageOptions Options => new()
    {
        DataDirectory = _data.Path, TopicPageSizeBits = PageBits, TopicSegmentSizeBits = SegmentBits, MaintenanceInterval = TimeSpan.FromDays(1),
    };

    [Fact]
    public async Task A_cut_tail_and_a_flipped_bit_mid_log_lose_only_the_damaged_page_and_are_reported()
    {
        // 300 messages of 1 KiB, one commit each: about six 64 KiB pages. FASTER writes a commit metadata file every
        // 128 commits and recovery scans the log forward from the newest one; the damage lies before it, as it would
        // in any log older than a few hundred commits (see docs/semantics.md for damage after it).
        const int messages = 300, damaged = 40;
        string logFolder = Path.Combine(_data.Path, "topics", "jobs", "log");
        long tail;
        List<(long Address, byte[] Payload)> entries;

        // 1. Write with commit-wait; dispose keeping the files.
        await using (var store = TopicStore.Open(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            for (int i = 0; i < messages; i++)
                await topic.AppendAsync([Message(i)]);
            tail = topic.Log.Durable.Address;
            entries = FasterLogFile.Entries(logFolder, PageBits, SegmentBits, topic.Log.BeginAddress, tail);
        }
        Assert.Equal(messages, entries.Count);

        // 2. Corrupt: the newest segment is cut right after the last commit (a torn tail), and one bit flips in the
        // payload of message 40, on the first page.
        long damagedAddress = entries[damaged].Address;
        long pageEnd = (damagedAddress >> PageBits) + 1 << PageBits;
        int lostUntil = entries.FindIndex(e => e.Address >= pageEnd);
        Assert.True(lostUntil > damaged && tail > pageEnd << 2, "the damaged page must not be the last one");
        using (var file = new FileStream(FasterLogFile.SegmentPath(logFolder, SegmentBits, tail), FileMode.Open, FileAccess.Write))
            file.SetLength(tail & ((1L << SegmentBits) - 1));
        FasterLogFile.FlipBit(logFolder, SegmentBits, damagedAddress + 12 + 500);

        // 3. Recover: every committed message is counted; a group gets everything but the damaged page's messages,
        // each intact, the damage is reported with its range, and acks move the floor past the gap.
        var logs = new LogLines();
        var expected = Enumerable.Range(0, messages).Where(i => i < damaged || i >= lostUntil).Select(i => (long)i).ToList();
        await using (var store = TopicStore.Open(Options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(messages, topic.NextOffset);
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var delivered = await AckAllAsync(group, expected.Count);
            Assert.Equal(expected, delivered);
            Assert.Equal(messages, group.Floor().Floor);

            var damage = Assert.Single(logs.Lines, line => line.EventId == 3002);
            Assert.Equal(LogLevel.Error, damage.Level);
            Assert.Contains("Topic jobs, message log", damage.Message);
            // The range starts right after message 39 (FASTER's commit record may lie between) and ends at the page end.
            var range = System.Text.RegularExpressions.Regex.Match(damage.Message, @"at addresses (\d+) to (\d+) \(file log\.0 from byte (\d+)\)");
            Assert.True(range.Success, damage.Message);
            long from = long.Parse(range.Groups[1].Value);
            Assert.InRange(from, entries[damaged - 1].Address + 1, damagedAddress);
            Assert.Equal(pageEnd, long.Parse(range.Groups[2].Value));
            Assert.Equal(from, long.Parse(range.Groups[3].Value));
            var lost = Assert.Single(logs.Lines, line => line.EventId == 3004);
            Assert.Contains($"offsets {damaged} to {lostUntil - 1} ({lostUntil - damaged} messages)", lost.Message);

            // 4. Write more: appended after the recovered tail, delivered.
            Assert.Equal(messages, (await topic.AppendAsync([Message(messages), Message(messages + 1)])).FirstOffset);
            Assert.Equal([(long)messages, messages + 1], await AckAllAsync(group, 2));
        }

        // 5. Recover again: the group's floor held; a new group meets the same damage, reported again, and gets the same.
        logs.Clear();
        await using (var store = TopicStore.Open(Options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(messages + 2, topic.NextOffset);
            Assert.Equal(messages + 2, topic.FindGroup("g")!.Floor().Floor);
            var (fresh, _) = await topic.GetOrCreateGroupAsync("h", GroupStart.Earliest, null, default);
            Assert.Equal([.. expected, (long)messages, messages + 1], await AckAllAsync(fresh, expected.Count + 2));
            Assert.Contains(logs.Lines, line => line.EventId == 3002);
        }
    }

    [Fact]
    public async Task A_flipped_bit_in_a_group_state_record_keeps_the_state_before_it_and_loses_no_message()
    {
        // One ack frame per commit, 1,000 of them: the group-state log spans several 32 KiB pages, and the damaged
        // record (the second frame's) lies on the first page, before FASTER's newest commit metadata file.
        const int messages = 1_100;
        string groupLog = Path.Combine(_data.Path, "topics", "jobs", "groups");
        long damagedAddress;

        // 1. Write with commit-wait: 100 acked in one frame, then the rest one by one; dispose keeping the files.
        await using (var store = TopicStore.Open(Options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            await topic.AppendAsync([.. Enumerable.Range(0, messages).Select(Message)]);
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(messages);
            var delivered = new List<GroupDelivery>();
            while (delivered.Count < messages)
                delivered.AddRange(await group.FetchAvailableAsync(member, messages - delivered.Count, default));
            Assert.Equal(100, (await group.SettleAsync(new SettleAction.Ack(), [.. delivered.Take(100).Select(d => new DeliveryRef(d.Offset, d.Token))])).Accepted);
            foreach (var delivery in delivered.Skip(100))
                Assert.Equal(1, (await group.SettleAsync(new SettleAction.Ack(), [new DeliveryRef(delivery.Offset, delivery.Token)])).Accepted);
            Assert.Equal(messages, group.Floor().Floor);
            var geometry = topic.Layout.GroupStateGeometry;
            var records = FasterLogFile.Entries(groupLog, geometry.PageSizeBits, geometry.SegmentSizeBits, 0, topic.GroupStateDurableAddress);
            damagedAddress = records.First(r => GroupRecord.TryParse(r.Payload, out var record)
                && record.Kind == GroupRecordKind.Acknowledged && record.AckFloor == 101).Address;
            Assert.True(damagedAddress >> geometry.PageSizeBits < topic.GroupStateDurableAddress >> geometry.PageSizeBits, "the damaged record must not be on the last page");
        }

        // 2. Corrupt: one bit of that record's payload.
        FasterLogFile.FlipBit(groupLog, 24, damagedAddress + 12 + 20);

        // 3. Recover: the topic opens, the damage is reported, the group is back at the floor before the damaged
        // record, and everything from there is delivered again: duplicates, nothing lost.
        var logs = new LogLines();
        await using (var store = TopicStore.Open(Options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            var damage = Assert.Single(logs.Lines, line => line.EventId == 3003);
            Assert.Equal(LogLevel.Error, damage.Level);
            Assert.Contains("Topic jobs, group-state log", damage.Message);
            var range = System.Text.RegularExpressions.Regex.Match(damage.Message, @"at addresses (\d+) to (\d+)");
            Assert.InRange(damagedAddress, long.Parse(range.Groups[1].Value), long.Parse(range.Groups[2].Value) - 1);
            var group = topic.FindGroup("g")!;
            Assert.Equal(100, group.Floor().Floor);
            Assert.Equal(Enumerable.Range(100, messages - 100).Select(i => (long)i), await AckAllAsync(group, messages - 100));

            // 4. Write more.
            await topic.AppendAsync([Message(messages)]);
            Assert.Equal([(long)messages], await AckAllAsync(group, 1));
        }

        // 5. Recover again: the damage was checkpointed away, so nothing is reported and every ack holds.
        logs.Clear();
        await using (var store = TopicStore.Open(Options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            Assert.Equal(messages + 1, topic.FindGroup("g")!.Floor().Floor);
            Assert.DoesNotContain(logs.Lines, line => line.EventId is 3002 or 3003);
        }
    }

    internal static AppendMessage Message(int i)
    {
        var payload = new byte[1000];
        for (int b = 0; b < payload.Length; b++)
            payload[b] = (byte)(i + b);
        BitConverter.TryWriteBytes(payload, i);
        return AppendMessage.FromPayload(payload);
    }

    /// <summary>Fetches <paramref name="count"/> deliveries, checks each payload is exactly what was written, acks them durably.</summary>
    internal static async Task<List<long>> AckAllAsync(ConsumerGroup group, int count)
    {
        var member = group.Join(count);
        var delivered = new List<GroupDelivery>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (delivered.Count < count)
            delivered.AddRange(await group.FetchAvailableAsync(member, count - delivered.Count, timeout.Token));
        foreach (var delivery in delivered)
            Assert.Equal(Message((int)delivery.Offset).Payload.ToArray(), delivery.Message.Payload.ToArray());
        foreach (var frame in delivered.Chunk(100))
            Assert.Equal(frame.Length, (await group.SettleAsync(new SettleAction.Ack(), frame.Select(d => new DeliveryRef(d.Offset, d.Token)).ToList())).Accepted);
        group.Leave(member);
        return [.. delivered.Select(d => d.Offset)];
    }
}
