using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>Poison messages end in the dead-letter topic with their story, and can be redriven.</summary>
public sealed class DeadLetterTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task A_message_out_of_deliveries_goes_to_the_dead_letter_topic_with_every_header()
    {
        string topic = await shared.NewTopicAsync();
        var headers = new Dictionary<string, string> { ["spider"] = "books" };
        var published = await Client.PublishAsync(topic, [new OutgoingMessage("poison"u8.ToArray(), "key-1"u8.ToArray(), headers)]);
        await using var consumer = await Client.SubscribeAsync(topic, "inserters", new SubscribeOptions
        {
            Group = new GroupOptions { MaxDeliveries = 2 },
        });

        var first = (await Receive.ExactlyAsync(consumer, 1))[0];
        await consumer.NackAsync([first], lastError: "first failure");
        var second = (await Receive.ExactlyAsync(consumer, 1))[0];
        Assert.Equal(2, second.Attempt);
        await consumer.NackAsync([second], lastError: "duplicate key value violates unique constraint");

        var dead = (await TopicReader.ReadAllAsync(Client, topic + ".dlq", 1))[0];
        Assert.Equal("poison", dead.PayloadText);
        Assert.Equal("key-1", System.Text.Encoding.UTF8.GetString(dead.Key.Span));
        Assert.Equal("books", dead.Headers["spider"]);
        Assert.Equal(topic, dead.Headers["broker-dlq-original-topic"]);
        Assert.Equal(published.FirstOffset.ToString(), dead.Headers["broker-dlq-original-offset"]);
        Assert.Equal(first.PublishTime.ToUnixTimeMilliseconds().ToString(), dead.Headers["broker-dlq-original-publish-unix-ms"]);
        Assert.Equal("inserters", dead.Headers["broker-dlq-group"]);
        Assert.Contains("max deliveries (2)", dead.Headers["broker-dlq-reason"]);
        Assert.Equal("2", dead.Headers["broker-dlq-delivery-count"]);
        Assert.Equal("duplicate key value violates unique constraint", dead.Headers["broker-dlq-last-error"]);
        long firstDelivery = long.Parse(dead.Headers["broker-dlq-first-delivery-unix-ms"]);
        long lastDelivery = long.Parse(dead.Headers["broker-dlq-last-delivery-unix-ms"]);
        Assert.True(firstDelivery <= lastDelivery);
        Assert.InRange(firstDelivery, first.PublishTime.ToUnixTimeMilliseconds(), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

        // The message is done for the group: it is not delivered again, and Describe counts it.
        await Receive.NothingMoreAsync(consumer);
        var group = (await Client.DescribeTopicAsync(topic)).Groups.Single(g => g.Name == "inserters");
        Assert.Equal(1UL, group.DeadLetteredTotal);
        Assert.Equal(1UL, group.RedeliveredTotal);
        Assert.Equal(1UL, group.AckFloor);
        Assert.Equal(0UL, group.Backlog);
        Assert.Equal(2U, group.Settings.MaxDeliveries);
    }

    [Fact]
    public async Task A_dead_letter_nack_sends_the_message_at_once_with_its_reason()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("{not json")]);
        await using var consumer = await Client.SubscribeAsync(topic, "parsers");
        var message = (await Receive.ExactlyAsync(consumer, 1))[0];

        Assert.Equal(1, (await consumer.DeadLetterAsync([message], "payload is not JSON", "unexpected end of input")).Accepted);

        var dead = (await TopicReader.ReadAllAsync(Client, topic + ".dlq", 1))[0];
        Assert.Equal("payload is not JSON", dead.Headers["broker-dlq-reason"]);
        Assert.Equal("unexpected end of input", dead.Headers["broker-dlq-last-error"]);
        Assert.Equal("1", dead.Headers["broker-dlq-delivery-count"]);
        await Receive.NothingMoreAsync(consumer);
    }

    [Fact]
    public async Task Redrive_moves_dead_letters_back_once_and_the_group_gets_them_again()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g", new SubscribeOptions { Group = new GroupOptions { DeadLetterTopic = topic + "-parked" } }))
        {
            var messages = await Receive.ExactlyAsync(consumer, 2);
            await consumer.DeadLetterAsync(messages, "bug in the worker");
            await TopicReader.ReadAllAsync(Client, topic + "-parked", 2);
        }

        var result = await Client.RedriveAsync(topic + "-parked");
        var again = await Client.RedriveAsync(topic + "-parked");

        Assert.Equal(2U, result.Moved);
        Assert.Equal(0U, result.Skipped);
        Assert.Equal(0U, again.Moved);
        await using var worker = await Client.SubscribeAsync(topic, "g");
        var redriven = await Receive.ExactlyAsync(worker, 2);
        Assert.Equal(["a", "b"], redriven.Select(m => m.PayloadText).Order());
        Assert.Equal([2L, 3], redriven.Select(m => m.Offset).Order());
        Assert.All(redriven, m => Assert.DoesNotContain(m.Headers.Keys, k => k.StartsWith("broker-")));
        Assert.All(redriven, m => Assert.Equal(1, m.Attempt));
        Assert.Equal(2, (await worker.AckAsync([.. redriven])).Accepted);
    }

    [Fact]
    public async Task A_redrive_with_a_target_moves_the_dead_letters_there_and_a_missing_target_moves_nothing()
    {
        string topic = await shared.NewTopicAsync();
        string repairs = await shared.NewTopicAsync("repairs");
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
            await consumer.DeadLetterAsync(await Receive.ExactlyAsync(consumer, 2), "needs a person");
        await TopicReader.ReadAllAsync(Client, topic + ".dlq", 2);

        var missing = await Assert.ThrowsAsync<BrokerClientException>(() => Client.RedriveAsync(topic + ".dlq", targetTopic: "no-such-topic"));
        Assert.Equal(Grpc.Core.StatusCode.NotFound, missing.Status);
        // Into itself: every moved letter would be one more to move.
        var itself = await Assert.ThrowsAsync<BrokerClientException>(() => Client.RedriveAsync(topic + ".dlq", targetTopic: topic + ".dlq"));
        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, itself.Status);
        Assert.Equal(1U, (await Client.RedriveAsync(topic + ".dlq", maxMessages: 1, targetTopic: repairs)).Moved);
        Assert.Equal(1U, (await Client.RedriveAsync(topic + ".dlq", targetTopic: repairs)).Moved);

        Assert.Equal(["a", "b"], (await TopicReader.ReadAllAsync(Client, repairs, 2)).Select(m => m.PayloadText));
        Assert.Equal(2UL, (await Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task A_producers_own_dlq_headers_are_kept_in_the_dead_letter_and_after_redrive()
    {
        string topic = await shared.NewTopicAsync();
        var headers = new Dictionary<string, string> { ["dlq-original-topic"] = "mine", ["dlq-reason"] = "also mine", ["trace"] = "t-1" };
        await Client.PublishAsync(topic, [new OutgoingMessage("job"u8.ToArray(), default, headers) { MessageId = "job-1", Priority = 7 }]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
        {
            var message = (await Receive.ExactlyAsync(consumer, 1))[0];
            Assert.Equal(1, (await consumer.DeadLetterAsync([message], "broken")).Accepted);
        }

        var dead = (await TopicReader.ReadAllAsync(Client, topic + ".dlq", 1))[0];
        Assert.Equal("mine", dead.Headers["dlq-original-topic"]);
        Assert.Equal("also mine", dead.Headers["dlq-reason"]);
        Assert.Equal("t-1", dead.Headers["trace"]);
        Assert.Equal(topic, dead.Headers["broker-dlq-original-topic"]);
        Assert.Equal("broken", dead.Headers["broker-dlq-reason"]);

        Assert.Equal(1U, (await Client.RedriveAsync(topic + ".dlq")).Moved);
        await using var worker = await Client.SubscribeAsync(topic, "g");
        var redriven = (await Receive.ExactlyAsync(worker, 1))[0];
        // The producer's headers and the priority go back; the message id does not (a redrive is no duplicate).
        Assert.Equal(headers.Append(new("broker-priority", "7")).OrderBy(h => h.Key), redriven.Headers.OrderBy(h => h.Key));
    }

    [Theory]
    [InlineData("broker-dlq-original-topic")]
    [InlineData("Broker-Anything")]
    [InlineData("BROKER-")]
    public async Task A_publish_with_a_reserved_header_name_is_refused_and_nothing_is_written(string name)
    {
        string topic = await shared.NewTopicAsync();
        var batch = new[] { OutgoingMessage.FromText("fine"), OutgoingMessage.FromText("bad", new Dictionary<string, string> { [name] = "x" }) };

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(topic, batch));

        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, error.Status);
        Assert.Equal(1000, error.ErrorCode);
        Assert.Contains("reserved", error.Message);
        Assert.Equal(0UL, (await Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task A_dead_letter_in_the_format_before_reserved_headers_is_still_redriven()
    {
        string topic = await shared.NewTopicAsync();
        string parked = await shared.NewTopicAsync("parked");
        // What a dead letter looked like before the broker's headers were reserved: dlq-* headers only.
        var legacy = new Dictionary<string, string> { ["dlq-original-topic"] = topic, ["dlq-reason"] = "old", ["trace"] = "t-2" };
        await Client.PublishAsync(parked, [new OutgoingMessage("old job"u8.ToArray(), default, legacy)]);

        var result = await Client.RedriveAsync(parked);

        Assert.Equal(1U, result.Moved);
        var redriven = (await TopicReader.ReadAllAsync(Client, topic, 1))[0];
        Assert.Equal("old job", redriven.PayloadText);
        Assert.Equal(new Dictionary<string, string> { ["trace"] = "t-2" }, redriven.Headers.ToDictionary());
    }
}
