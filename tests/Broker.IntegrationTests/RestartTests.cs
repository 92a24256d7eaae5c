using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

public sealed class RestartTests
{
    [Fact]
    public async Task A_restart_keeps_every_acknowledged_publish_and_redelivers_exactly_what_was_not_acked()
    {
        await using var broker = await TestBroker.StartAsync();
        // 1. Publish 10, consume all, ack 0-4 and 7.
        await broker.Client.CreateTopicAsync("jobs");
        await broker.Client.CreateGroupAsync("jobs", "auditors");
        await broker.Client.PublishAsync("jobs", Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText($"job {i}")));
        await using (var subscription = await broker.Client.SubscribeAsync("jobs", "workers"))
        {
            var received = await Receive.ExactlyAsync(subscription, 10);
            var ack = await subscription.AckAsync(received.Where(m => m.Offset is < 5 or 7), default);
            Assert.Equal(6, ack.Accepted);
        }

        // 2. Restart on the same data folder.
        await broker.RestartAsync();

        // 3. The group gets exactly the unacked ones; the other group still gets all ten, intact.
        await using (var subscription = await broker.Client.SubscribeAsync("jobs", "workers"))
        {
            Assert.False(subscription.Subscribed.GroupCreated);
            var redelivered = await Receive.ExactlyAsync(subscription, 4);
            Assert.Equal([5L, 6, 8, 9], redelivered.Select(m => m.Offset));
            Assert.Equal(["job 5", "job 6", "job 8", "job 9"], redelivered.Select(m => m.PayloadText));
            await Receive.NothingMoreAsync(subscription);
        }
        await using (var fresh = await broker.Client.SubscribeAsync("jobs", "auditors"))
        {
            var all = await Receive.ExactlyAsync(fresh, 10);
            Assert.Equal(Enumerable.Range(0, 10).Select(i => $"job {i}"), all.Select(m => m.PayloadText));
        }
        var description = await broker.Client.DescribeTopicAsync("jobs");
        Assert.Equal(10UL, description.NextOffset);
        Assert.Equal(5UL, description.Groups.Single(g => g.Name == "workers").AckFloor);
    }

    [Fact]
    public async Task Offsets_continue_after_a_restart_and_topics_survive_it()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("a");
        await broker.Client.CreateTopicAsync("b");
        await broker.Client.PublishAsync("a", [OutgoingMessage.FromText("1"), OutgoingMessage.FromText("2")]);

        await broker.RestartAsync();

        Assert.Equal(["a", "b"], await broker.Client.ListTopicsAsync());
        Assert.Equal(2, (await broker.Client.PublishAsync("a", [OutgoingMessage.FromText("3")])).FirstOffset);
        Assert.Equal(0, (await broker.Client.PublishAsync("b", [OutgoingMessage.FromText("x")])).FirstOffset);
    }

    [Fact]
    public async Task Delivery_counts_survive_restarts_so_a_poison_message_still_ends_in_the_dead_letter_topic()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("jobs");
        await broker.Client.CreateGroupAsync("jobs", "workers", options: new GroupOptions { MaxDeliveries = 2 });
        await broker.Client.PublishAsync("jobs", [OutgoingMessage.FromText("crashes every worker")]);

        // Each time a worker takes the job, the whole broker goes down before anyone acks.
        for (int attempt = 1; attempt <= 2; attempt++)
        {
            await using (var worker = await broker.Client.SubscribeAsync("jobs", "workers"))
                Assert.Equal(attempt, (await Receive.ExactlyAsync(worker, 1))[0].Attempt);
            await broker.RestartAsync();
        }

        // The next worker never sees it: out of deliveries, it goes to the dead letters instead.
        await using var again = await broker.Client.SubscribeAsync("jobs", "workers");
        await Receive.NothingMoreAsync(again);
        var dead = (await TopicReader.ReadAllAsync(broker.Client, "jobs.dlq", 1))[0];
        Assert.Equal("crashes every worker", dead.PayloadText);
        Assert.Equal("2", dead.Headers["broker-dlq-delivery-count"]);
        Assert.Contains("max deliveries (2)", dead.Headers["broker-dlq-reason"]);
    }
}
