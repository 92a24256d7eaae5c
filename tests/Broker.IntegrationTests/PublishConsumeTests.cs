using System.Text;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

public sealed class PublishConsumeTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task A_published_message_is_delivered_with_its_content_and_acked()
    {
        string topic = await shared.NewTopicAsync();
        var headers = new Dictionary<string, string> { ["content-type"] = "application/json", ["spider"] = "books" };
        var published = await Client.PublishAsync(topic,
        [
            new OutgoingMessage(Encoding.UTF8.GetBytes("{\"id\":1}"), Encoding.UTF8.GetBytes("job-1"), headers),
            OutgoingMessage.FromText("{\"id\":2}"),
        ]);
        Assert.Equal(new PublishResult(0, 2), published);

        await using var subscription = await Client.SubscribeAsync(topic, "writers");
        Assert.True(subscription.Subscribed.GroupCreated);
        var received = await Receive.ExactlyAsync(subscription, 2);

        Assert.Equal([0L, 1], received.Select(m => m.Offset));
        Assert.Equal("{\"id\":1}", received[0].PayloadText);
        Assert.Equal("job-1", Encoding.UTF8.GetString(received[0].Key.Span));
        Assert.Equal(headers, received[0].Headers);
        Assert.Empty(received[1].Headers);
        Assert.All(received, m => Assert.Equal(1, m.Attempt));
        Assert.All(received, m => Assert.Equal(topic, m.Topic));
        Assert.InRange(received[0].PublishTime, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(1));

        var ack = await subscription.AckAsync([.. received]);
        Assert.Equal(2, ack.Accepted);
        Assert.Empty(ack.Refused);

        var description = await Client.DescribeTopicAsync(topic);
        var group = Assert.Single(description.Groups);
        Assert.Equal(2UL, group.AckFloor);
        Assert.Equal(0UL, group.Backlog);
        Assert.Equal(0UL, group.InFlight);
        Assert.Equal(2UL, description.NextOffset);
    }

    [Fact]
    public async Task A_consumer_never_holds_more_than_its_max_in_flight_and_acks_refill_it()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText($"m{i}")));

        await using var subscription = await Client.SubscribeAsync(topic, "g", new SubscribeOptions { MaxInFlight = 3 });
        Assert.Equal(3U, subscription.Subscribed.MaxInFlight);
        var first = await Receive.ExactlyAsync(subscription, 3);
        await Receive.NothingMoreAsync(subscription);

        await subscription.AckAsync(first[0]);
        var next = await Receive.ExactlyAsync(subscription, 1);
        Assert.Equal(3, next[0].Offset);
        await Receive.NothingMoreAsync(subscription);
    }

    [Fact]
    public async Task Every_group_gets_every_message()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, 20).Select(i => OutgoingMessage.FromText($"m{i}")));

        await using var billing = await Client.SubscribeAsync(topic, "billing");
        await using var archive = await Client.SubscribeAsync(topic, "archive");

        Assert.Equal(Enumerable.Range(0, 20).Select(i => (long)i), (await Receive.ExactlyAsync(billing, 20)).Select(m => m.Offset));
        Assert.Equal(Enumerable.Range(0, 20).Select(i => (long)i), (await Receive.ExactlyAsync(archive, 20)).Select(m => m.Offset));
    }

    [Fact]
    public async Task Messages_published_after_subscribing_are_delivered_and_latest_skips_older_ones()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("old")]);
        await using var subscription = await Client.SubscribeAsync(topic, "new-only", new SubscribeOptions { Start = StartAt.Latest });

        await Client.PublishAsync(topic, [OutgoingMessage.FromText("fresh")]);

        var received = await Receive.ExactlyAsync(subscription, 1);
        Assert.Equal("fresh", received[0].PayloadText);
        Assert.Equal(1, received[0].Offset);
    }

    [Fact]
    public async Task When_a_consumer_leaves_its_unacked_messages_go_to_another_consumer_of_the_group()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, 4).Select(i => OutgoingMessage.FromText($"m{i}")));

        var leaving = await Client.SubscribeAsync(topic, "g");
        var taken = await Receive.ExactlyAsync(leaving, 4);
        await using var staying = await Client.SubscribeAsync(topic, "g");
        await Receive.NothingMoreAsync(staying);

        await leaving.DisposeAsync();

        var redelivered = await Receive.ExactlyAsync(staying, 4);
        Assert.Equal(taken.Select(m => m.Offset), redelivered.Select(m => m.Offset).Order());
        Assert.All(redelivered, m => Assert.Equal(2, m.Attempt));
        Assert.Equal(4, (await staying.AckAsync([.. redelivered])).Accepted);
    }

    [Fact]
    public async Task Topics_can_be_listed_described_and_deleted()
    {
        string topic = await shared.NewTopicAsync();
        Assert.Contains(topic, await Client.ListTopicsAsync());
        Assert.False(await Client.CreateTopicAsync(topic, ifNotExists: true));

        await Client.DeleteTopicAsync(topic);

        Assert.DoesNotContain(topic, await Client.ListTopicsAsync());
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.DescribeTopicAsync(topic));
        Assert.Equal(Grpc.Core.StatusCode.NotFound, error.Status);
    }
}
