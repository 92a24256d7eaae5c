using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Server.Hosting;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Topics on first use (<see cref="BrokerOptions.AutoCreateTopics"/>): on by default, a publish or a subscribe creates
/// the topic it names, durably; off, both are NOT_FOUND (1001). An invalid name is INVALID_ARGUMENT (1002) either way.
/// </summary>
public sealed class AutoCreateTopicsTests
{
    [Fact]
    public void It_is_on_by_default()
    {
        Assert.True(new BrokerOptions().AutoCreateTopics);
    }

    [Fact]
    public async Task On_a_publish_creates_its_topic_durably_and_a_subscribe_creates_its_topic_and_group()
    {
        await using var broker = await TestBroker.StartAsync(options => options.AutoCreateTopics = true);

        var published = await broker.Client.PublishAsync("first-use", [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        Assert.Equal(0, published.FirstOffset);
        await using (var subscription = await broker.Client.SubscribeAsync("consumed-first", "g"))
        {
            await broker.Client.PublishAsync("consumed-first", [OutgoingMessage.FromText("c")]);
            var received = await Receive.ExactlyAsync(subscription, 1);
            Assert.Equal("c", received[0].PayloadText);
            await subscription.AckAsync(received[0]);
        }
        // Both topics were created as CreateTopic would: listed, and still there after a restart with their messages.
        await broker.RestartAsync();
        Assert.Contains("first-use", await broker.Client.ListTopicsAsync());
        Assert.Equal(2UL, (await broker.Client.DescribeTopicAsync("first-use")).NextOffset);
        var consumedFirst = await broker.Client.DescribeTopicAsync("consumed-first");
        Assert.Equal(1UL, consumedFirst.Groups.Single(g => g.Name == "g").AckFloor);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task An_invalid_name_is_refused_either_way(bool autoCreate)
    {
        await using var broker = await TestBroker.StartAsync(options => options.AutoCreateTopics = autoCreate);

        var publish = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.PublishAsync("bad/name", [OutgoingMessage.FromText("x")]));
        Assert.Equal((StatusCode.InvalidArgument, 1002), (publish.Status, publish.ErrorCode));
        var subscribe = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.SubscribeAsync("..", "g"));
        Assert.Equal((StatusCode.InvalidArgument, 1002), (subscribe.Status, subscribe.ErrorCode));
        Assert.Empty(await broker.Client.ListTopicsAsync());
    }

    [Fact]
    public async Task Off_publish_and_subscribe_to_an_unknown_topic_are_not_found_and_create_nothing()
    {
        await using var broker = await TestBroker.StartAsync(options => options.AutoCreateTopics = false);

        var publish = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.PublishAsync("locked", [OutgoingMessage.FromText("x")]));
        Assert.Equal((StatusCode.NotFound, 1001), (publish.Status, publish.ErrorCode));
        var subscribe = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.SubscribeAsync("locked", "g"));
        Assert.Equal((StatusCode.NotFound, 1001), (subscribe.Status, subscribe.ErrorCode));
        Assert.Empty(await broker.Client.ListTopicsAsync());
    }

    [Fact]
    public async Task The_process_reads_the_setting_from_its_environment()
    {
        string data = TestBroker.NewDataDirectory();
        try
        {
            using (var defaults = await BrokerProcess.StartAsync(data))
            {
                using var client = new BrokerClient(defaults.Address);
                await client.PublishAsync("from-process", [OutgoingMessage.FromText("x")]);
                Assert.Contains("from-process", await client.ListTopicsAsync());
            }
            using var locked = await BrokerProcess.StartAsync(["--port", "0", "--data", data],
                new Dictionary<string, string> { ["BROKER_AUTOCREATETOPICS"] = "false" });
            using var lockedClient = new BrokerClient(locked.Address);
            var refused = await Assert.ThrowsAsync<BrokerClientException>(() => lockedClient.PublishAsync("other", [OutgoingMessage.FromText("x")]));
            Assert.Equal((StatusCode.NotFound, 1001), (refused.Status, refused.ErrorCode));
            await lockedClient.PublishAsync("from-process", [OutgoingMessage.FromText("y")]);
        }
        finally
        {
            if (Directory.Exists(data))
                Directory.Delete(data, recursive: true);
        }
    }
}
