using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// An admin operation that was answered survives SIGKILL of the broker right after the answer: a deleted group does not
/// come back, a reset group reads from its new position (its acks from before the reset do not return), a purged
/// topic stays empty, a changed retention holds. Each test: child broker, the operation, SIGKILL the moment the answer
/// arrives, restart on the same folder, check.
/// </summary>
public sealed class AdminCrashTests
{
    [Fact]
    public async Task A_deleted_group_does_not_come_back_after_sigkill()
    {
        await RunAsync(
            async client =>
            {
                await client.CreateGroupAsync("jobs", "keep");
                await client.CreateGroupAsync("jobs", "gone");
                await using (var subscription = await client.SubscribeAsync("jobs", "gone"))
                    await subscription.AckAsync([.. await Receive.ExactlyAsync(subscription, 3)], default);
                await client.DeleteGroupAsync("jobs", "gone");
            },
            async client =>
            {
                var groups = (await client.DescribeTopicAsync("jobs")).Groups;
                Assert.Equal(["keep"], groups.Select(g => g.Name));
                // A new group of that name is a new group: it starts at the oldest message, as created now.
                await using var subscription = await client.SubscribeAsync("jobs", "gone");
                Assert.Equal([0L, 1, 2, 3, 4], (await Receive.ExactlyAsync(subscription, 5)).Select(m => m.Offset));
            });
    }

    [Fact]
    public async Task A_reset_group_reads_from_its_new_position_after_sigkill()
    {
        await RunAsync(
            async client =>
            {
                await using var subscription = await client.SubscribeAsync("jobs", "g");
                var all = await Receive.ExactlyAsync(subscription, 5);
                Assert.Equal(5, (await subscription.AckAsync(all, default)).Accepted);
                Assert.Equal(1, await client.ResetGroupAsync("jobs", "g", StartAt.AtOffset(1)));
            },
            async client =>
            {
                var group = (await client.DescribeTopicAsync("jobs")).Groups.Single();
                Assert.Equal((1UL, 4UL), (group.AckFloor, group.Backlog));
                await using var subscription = await client.SubscribeAsync("jobs", "g");
                var replayed = await Receive.ExactlyAsync(subscription, 4);
                Assert.Equal([1L, 2, 3, 4], replayed.Select(m => m.Offset));
                Assert.All(replayed, m => Assert.Equal(1, m.Attempt));
                await Receive.NothingMoreAsync(subscription);
            });
    }

    [Fact]
    public async Task A_purged_topic_stays_empty_and_a_changed_retention_holds_after_sigkill()
    {
        await RunAsync(
            async client =>
            {
                await client.CreateGroupAsync("jobs", "g");
                await client.UpdateTopicRetentionAsync("jobs", new RetentionOptions { MaxAge = TimeSpan.FromDays(7), MaxBytes = 1 << 30 });
                Assert.Equal(5, await client.PurgeTopicAsync("jobs"));
            },
            async client =>
            {
                var description = await client.DescribeTopicAsync("jobs");
                Assert.Equal((5UL, 5UL), (description.FirstOffset, description.NextOffset));
                Assert.Equal(5UL, description.Groups.Single().AckFloor);
                Assert.Equal((7UL * 24 * 3600 * 1000, 1UL << 30), (description.Retention.MaxAgeMs, description.Retention.MaxBytes));
                await using var subscription = await client.SubscribeAsync("jobs", "late");
                await Receive.NothingMoreAsync(subscription);
            });
    }

    /// <summary>Topic "jobs" with offsets 0 to 4; <paramref name="operate"/>; SIGKILL at once; restart; <paramref name="check"/>.</summary>
    private static async Task RunAsync(Func<BrokerClient, Task> operate, Func<BrokerClient, Task> check)
    {
        string data = TestBroker.NewDataDirectory();
        try
        {
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync("jobs");
                await client.PublishAsync("jobs", Enumerable.Range(0, 5).Select(i => OutgoingMessage.FromText($"job {i}")));
                await operate(client);
                broker.Kill();
            }
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
                await check(client);
        }
        finally
        {
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
