using Broker.Storage.Groups;
using Broker.Storage.Topics;

namespace Broker.Storage.Tests;

public sealed class GroupCheckpointTests : IDisposable
{
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    [Fact]
    public async Task A_checkpoint_shrinks_the_group_state_log_and_recovery_from_it_keeps_every_ack()
    {
        // Invariant: after a checkpoint the state log holds snapshots instead of history, and a restart from it
        // delivers exactly the messages that had no ack.
        var options = new StorageOptions { DataDirectory = _data.Path, GroupStateCheckpointBytes = 4096, MaintenanceInterval = TimeSpan.FromDays(1) };
        var unacked = new HashSet<long> { 3, 999, 1500, 1999 };
        long bytesBeforeCheckpoint, bytesAfterCheckpoint;
        await using (var store = await TopicStore.OpenAsync(options))
        {
            // 1. Two groups; 2,000 messages; one group acks all but four, in 200 frames.
            await store.CreateTopicAsync("jobs", false, default);
            var topic = (await store.GetTopicAsync("jobs"));
            await topic.AppendAsync(TopicStoreTests.Messages(Enumerable.Range(0, 2000).Select(i => $"m{i}").ToArray()));
            _ = await topic.GetOrCreateGroupAsync("other", GroupStart.Earliest, null, default);
            var (group, _) = await topic.GetOrCreateGroupAsync("g", GroupStart.Earliest, null, default);
            var member = group.Join(10_000);
            var delivered = new List<GroupDelivery>();
            while (delivered.Count < 2000)
                delivered.AddRange(await group.FetchAvailableAsync(member, 2000, default));
            foreach (var frame in delivered.Where(d => !unacked.Contains(d.Offset)).Chunk(10))
                Assert.Equal(frame.Length, (await group.SettleAsync(new SettleAction.Ack(), frame.Select(d => new DeliveryRef(d.Offset, d.Token)).ToList())).Accepted);
            bytesBeforeCheckpoint = topic.GroupStateLogBytes;

            // 2. Checkpoint.
            await store.MaintainAllAsync(default);
            bytesAfterCheckpoint = topic.GroupStateLogBytes;
        }
        Assert.True(bytesAfterCheckpoint < bytesBeforeCheckpoint / 4, $"state log {bytesBeforeCheckpoint} -> {bytesAfterCheckpoint} bytes");

        // 3. Recover: the floor is at the first unacked message and exactly the four come back; the other group is intact.
        await using (var store = await TopicStore.OpenAsync(options))
        {
            var topic = (await store.GetTopicAsync("jobs"));
            var info = await topic.DescribeAsync(default);
            Assert.Equal(3, info.Groups.Single(g => g.Name == "g").AckFloor);
            Assert.Equal(0, info.Groups.Single(g => g.Name == "other").AckFloor);
            var group = topic.FindGroup("g")!;
            var member = group.Join(100);
            var again = await group.FetchAvailableAsync(member, 100, default);
            Assert.Equal(unacked.Order(), again.Select(d => d.Offset));
            Assert.Empty(await group.FetchAvailableAsync(member, 100, default));
        }
    }
}
