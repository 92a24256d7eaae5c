using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// Delivery orders of a group's own on the real broker over gRPC with the SDK: priority levels under a backlog
/// (highest first, and the anti-starvation rule: one delivery in ten is the oldest ready message), newest first
/// (LIFO), and both kept across a restart; a group without either delivers in publish order whatever the priorities.
/// </summary>
public sealed class DeliveryOrderTests
{
    [Fact]
    public async Task Under_a_backlog_higher_priorities_go_first_and_every_tenth_delivery_is_the_oldest_waiting()
    {
        await using var broker = await TestBroker.StartAsync();
        var client = broker.Client;
        await client.CreateTopicAsync("jobs");
        await client.CreateGroupAsync("jobs", "by-priority", options: new GroupOptions { PriorityLevels = 10 });
        await client.CreateGroupAsync("jobs", "in-order");
        // Offsets 0-9 low (0), 10-14 urgent (9), 15-19 normal (5).
        await client.PublishAsync("jobs", [.. Enumerable.Range(0, 20).Select(i =>
            OutgoingMessage.FromText($"{i}") with { Priority = i < 10 ? 0 : i < 15 ? 9 : 5 })]);

        Assert.Equal([10L, 11, 12, 13, 14, 15, 16, 17, 18, 0, 19, 1, 2, 3, 4, 5, 6, 7, 8, 9], await ReceiveOneByOneAsync(client, "by-priority", 20));
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (long)i), await ReceiveOneByOneAsync(client, "in-order", 20));

        // After a restart the group still orders by priority.
        await broker.RestartAsync();
        await broker.Client.PublishAsync("jobs", [OutgoingMessage.FromText("low"), OutgoingMessage.FromText("high") with { Priority = 3 }]);
        Assert.Equal([21L, 20], await ReceiveOneByOneAsync(broker.Client, "by-priority", 2));
    }

    [Fact]
    public async Task A_newest_first_group_hands_out_the_latest_message_first()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("readings");
        await broker.Client.CreateGroupAsync("readings", "latest", options: new GroupOptions { NewestFirst = true });
        await broker.Client.PublishAsync("readings", [.. Enumerable.Range(0, 5).Select(i => OutgoingMessage.FromText($"{i}"))]);

        Assert.Equal([4L, 3, 2, 1, 0], await ReceiveOneByOneAsync(broker.Client, "latest", 5));
        await broker.RestartAsync();
        Assert.True((await broker.Client.DescribeTopicAsync("readings")).Groups.Single().Settings.NewestFirst);
    }

    [Fact]
    public async Task A_priority_out_of_range_refuses_the_batch_and_a_group_cannot_order_both_ways()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("jobs");
        var badPriority = await Assert.ThrowsAsync<BrokerClientException>(() =>
            broker.Client.PublishAsync("jobs", [OutgoingMessage.FromText("ok"), OutgoingMessage.FromText("too high") with { Priority = 256 }]));
        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, badPriority.Status);
        Assert.Contains("message 1", badPriority.Message);
        var both = await Assert.ThrowsAsync<BrokerClientException>(() =>
            broker.Client.CreateGroupAsync("jobs", "g", options: new GroupOptions { PriorityLevels = 4, NewestFirst = true }));
        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, both.Status);
        // Nothing stored, no group made, and the broker serves on.
        var topic = await broker.Client.DescribeTopicAsync("jobs");
        Assert.Equal((0UL, 0), (topic.NextOffset, topic.Groups.Count));
        Assert.Equal(1, (await broker.Client.PublishAsync("jobs", [OutgoingMessage.FromText("fine") with { Priority = 255 }])).Count);
    }

    // One in flight at a time, each acked before the next is handed out: the order is the group's choice alone.
    private static async Task<List<long>> ReceiveOneByOneAsync(BrokerClient client, string group, int count)
    {
        await using var subscription = await client.SubscribeAsync(group == "latest" ? "readings" : "jobs", group, new SubscribeOptions { MaxInFlight = 1 });
        var order = new List<long>();
        for (int i = 0; i < count; i++)
        {
            var message = (await Receive.ExactlyAsync(subscription, 1)).Single();
            Assert.Equal(1, message.Attempt);
            order.Add(message.Offset);
            Assert.Equal(1, (await subscription.AckAsync(message)).Accepted);
        }
        await Receive.NothingMoreAsync(subscription);
        return order;
    }
}
