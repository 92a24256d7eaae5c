using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

/// <summary>
/// An entry damaged on disk after its first delivery (redeliveries and dead letters read a message again by its
/// address). Invariant: the fetch that meets it does not fail; the message is reported lost (event 3004) and counted
/// done for the group, which delivers the rest and whose floor moves past it; a dead letter that can no longer be
/// read is reported the same way instead of being retried forever.
/// </summary>
public sealed class DamagedRedeliveryTests : IDisposable
{
    private const int PageBits = 16;
    private const int SegmentBits = 20;
    private const int Messages = 300;
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task A_message_damaged_after_its_first_delivery_is_reported_lost_and_the_group_goes_on()
    {
        var options = new StorageOptions
        {
            DataDirectory = _data.Path, TopicPageSizeBits = PageBits, TopicSegmentSizeBits = SegmentBits, MaintenanceInterval = TimeSpan.FromDays(1),
        };
        string logFolder = Path.Combine(_data.Path, "topics", "jobs", "log");
        var logs = new LogLines();

        // 1. Messages on disk, and two groups.
        await using (var store = TopicStore.Open(options))
        {
            await store.CreateTopicAsync("jobs", false, default);
            var topic = await store.GetTopicAsync("jobs");
            for (int i = 0; i < Messages; i++)
                await topic.AppendAsync([DamagedLogTests.Message(i)]);
            await topic.GetOrCreateGroupAsync("retry", GroupStart.Earliest, null, default);
            var policy = new GroupPolicy(TimeSpan.FromSeconds(30), MaxDeliveries: 1, DeadLetterTopic: "");
            await topic.GetOrCreateGroupAsync("dead", GroupStart.Earliest, policy, default);
        }

        // 2. After a restart the old pages are read from disk. Both groups take offsets 0-9 and nack 5: "retry" to get it
        //    again, "dead" (one delivery allowed) to dead-letter it; then offset 5's entry is damaged on disk.
        await using (var store = TopicStore.Open(options, loggerFactory: logs))
        {
            var topic = await store.GetTopicAsync("jobs");
            var retry = topic.FindGroup("retry")!;
            var dead = topic.FindGroup("dead")!;
            var retryMember = retry.Join(10);
            var deadMember = dead.Join(10);
            var first = await retry.FetchAvailableAsync(retryMember, 10, default);
            var deadFirst = await dead.FetchAvailableAsync(deadMember, 10, default);
            Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), first.Select(d => d.Offset));
            var entries = FasterLogFile.Entries(logFolder, PageBits, SegmentBits, topic.Log.BeginAddress, topic.Log.Durable.Address);
            FasterLogFile.FlipBit(logFolder, SegmentBits, entries[5].Address + 12 + 500);
            Assert.Equal(1, (await retry.SettleAsync(new SettleAction.Retry(TimeSpan.Zero, null), [Ref(first[5])])).Accepted);
            Assert.Equal(1, (await dead.SettleAsync(new SettleAction.Retry(TimeSpan.Zero, null), [Ref(deadFirst.Single(d => d.Offset == 5))])).Accepted);

            // 3. The redelivery finds it unreadable: reported, dropped, and the fetch goes on with new messages.
            var next = await retry.FetchAvailableAsync(retryMember, 5, default);
            Assert.DoesNotContain(next, d => d.Offset == 5);
            Assert.Equal(10, next[0].Offset);
            Assert.Contains(logs.Lines, line => line.EventId == 3004 && line.Message.Contains("retry", StringComparison.Ordinal));

            // 4. The dead letter cannot be read either: reported and done, not retried forever.
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (!logs.Lines.ToList().Exists(line => line.EventId == 3004 && line.Message.Contains("dead", StringComparison.Ordinal)))
                await Task.Delay(10, deadline.Token);

            // 5. Both floors move past offset 5 once the rest is acked.
            await retry.SettleAsync(new SettleAction.Ack(), [.. first.Where(d => d.Offset != 5).Concat(next).Select(Ref)]);
            await dead.SettleAsync(new SettleAction.Ack(), [.. deadFirst.Where(d => d.Offset != 5).Select(Ref)]);
            Assert.Equal(15, retry.Floor().Floor);
            while (dead.Floor().Floor < 10)
                await Task.Delay(10, deadline.Token);
        }
    }

    private static DeliveryRef Ref(GroupDelivery delivery) => new(delivery.Offset, delivery.Token);
}
