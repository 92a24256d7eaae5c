using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Where dead letters may go: never back into the group's own topic; a dead-letter topic is the end of the line (its
/// groups deliver until acknowledged and create no "&lt;topic&gt;.dlq.dlq"); every valid topic name has a valid default
/// dead-letter topic.
/// </summary>
public sealed class DeadLetterNamingTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task A_group_whose_dead_letter_topic_is_its_own_topic_is_refused()
    {
        string topic = await shared.NewTopicAsync();

        var created = await Assert.ThrowsAsync<BrokerClientException>(() =>
            Client.CreateGroupAsync(topic, "g", options: new GroupOptions { DeadLetterTopic = topic }));
        var subscribed = await Assert.ThrowsAsync<BrokerClientException>(() =>
            Client.SubscribeAsync(topic, "g", new SubscribeOptions { Group = new GroupOptions { DeadLetterTopic = topic } }));

        foreach (var error in new[] { created, subscribed })
        {
            Assert.Equal(StatusCode.InvalidArgument, error.Status);
            Assert.Equal(1000, error.ErrorCode);
        }
        Assert.Empty((await Client.DescribeTopicAsync(topic)).Groups);
    }

    [Theory]
    [InlineData("bad/name")]
    [InlineData("..")]
    [InlineData("with space")]
    public async Task An_invalid_explicit_dead_letter_topic_name_is_invalid_name(string deadLetters)
    {
        string topic = await shared.NewTopicAsync();

        var error = await Assert.ThrowsAsync<BrokerClientException>(() =>
            Client.CreateGroupAsync(topic, "g", options: new GroupOptions { DeadLetterTopic = deadLetters }));

        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Equal(1002, error.ErrorCode);
    }

    [Fact]
    public async Task A_group_on_a_dead_letter_topic_delivers_until_acked_and_creates_no_further_dead_letter_topic()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("poison")]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
            await consumer.DeadLetterAsync(await Receive.ExactlyAsync(consumer, 1), "broken");

        await using var inspector = await Client.SubscribeAsync(topic + ".dlq", "inspector");
        for (int attempt = 1; attempt <= 7; attempt++)
        {
            var letter = (await Receive.ExactlyAsync(inspector, 1))[0];
            Assert.Equal(attempt, letter.Attempt);
            if (attempt < 7)
                await inspector.NackAsync([letter]);
            else
                Assert.Equal(1, (await inspector.AckAsync(letter)).Accepted);
        }

        Assert.DoesNotContain(topic + ".dlq.dlq", await Client.ListTopicsAsync());
        var group = (await Client.DescribeTopicAsync(topic + ".dlq")).Groups.Single(g => g.Name == "inspector");
        Assert.Equal(0U, group.Settings.MaxDeliveries);
        Assert.Equal(0UL, group.DeadLetteredTotal);
        Assert.Equal(1UL, group.AckFloor);
    }

    [Fact]
    public async Task A_group_on_a_dead_letter_topic_with_an_explicit_limit_dead_letters_as_usual()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("poison")]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
            await consumer.DeadLetterAsync(await Receive.ExactlyAsync(consumer, 1), "broken");

        await using var inspector = await Client.SubscribeAsync(topic + ".dlq", "inspector",
            new SubscribeOptions { Group = new GroupOptions { MaxDeliveries = 1, DeadLetterTopic = topic + "-final" } });
        await inspector.NackAsync(await Receive.ExactlyAsync(inspector, 1));

        var final = (await TopicReader.ReadAllAsync(Client, topic + "-final", 1))[0];
        Assert.Equal("poison", final.PayloadText);
        Assert.Equal(topic + ".dlq", final.Headers["broker-dlq-original-topic"]);
        Assert.Contains("max deliveries (1)", final.Headers["broker-dlq-reason"]);
    }

    [Fact]
    public async Task A_200_character_topic_can_be_subscribed_with_default_settings_and_its_dead_letters_read()
    {
        string topic = ("long-" + Guid.NewGuid().ToString("N")).PadRight(200, 'x');
        Assert.True(await Client.CreateTopicAsync(topic));
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("job")]);

        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
            Assert.Equal(1, (await consumer.DeadLetterAsync(await Receive.ExactlyAsync(consumer, 1), "broken")).Accepted);

        var dead = (await TopicReader.ReadAllAsync(Client, topic + ".dlq", 1))[0];
        Assert.Equal("job", dead.PayloadText);
        Assert.Equal(topic, dead.Headers["broker-dlq-original-topic"]);
        Assert.Equal(1U, (await Client.RedriveAsync(topic + ".dlq")).Moved);
        Assert.Equal(2UL, (await Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task The_dead_letters_of_a_200_character_topics_dead_letter_topic_are_routed_and_readable_with_a_named_dead_letter_topic()
    {
        string topic = ("long-" + Guid.NewGuid().ToString("N")).PadRight(200, 'y');
        await Client.CreateTopicAsync(topic);
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("job")]);
        await using (var consumer = await Client.SubscribeAsync(topic, "g"))
            await consumer.DeadLetterAsync(await Receive.ExactlyAsync(consumer, 1), "broken");
        await using (var inspector = await Client.SubscribeAsync(topic + ".dlq", "inspector"))
            Assert.Equal(1, (await inspector.DeadLetterAsync(await Receive.ExactlyAsync(inspector, 1), "still broken")).Accepted);

        // Routing is asynchronous, and this dead-letter topic is created by its first letter.
        using (var routed = new CancellationTokenSource(Receive.Deadline))
        {
            while (!(await Client.ListTopicsAsync(routed.Token)).Contains(topic + ".dlq.dlq"))
                await Task.Delay(20, routed.Token);
        }
        // Its own default dead-letter topic would be 212 characters: a group there must name one (a clear refusal,
        // rather than dead letters that could never be routed).
        var refused = await Assert.ThrowsAsync<BrokerClientException>(() => Client.SubscribeAsync(topic + ".dlq.dlq", "reader"));
        Assert.Equal(1002, refused.ErrorCode);
        Assert.Contains("set one explicitly", refused.Message);
        await using var reader = await Client.SubscribeAsync(topic + ".dlq.dlq", "reader",
            new SubscribeOptions { Group = new GroupOptions { DeadLetterTopic = "parked-" + Guid.NewGuid().ToString("N") } });
        var twice = (await Receive.ExactlyAsync(reader, 1))[0];
        Assert.Equal("job", twice.PayloadText);
        Assert.Equal(topic + ".dlq", twice.Headers["broker-dlq-original-topic"]);
        Assert.Equal("still broken", twice.Headers["broker-dlq-reason"]);
    }

    [Fact]
    public async Task A_201_character_topic_name_is_still_invalid()
    {
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateTopicAsync(new string('a', 201)));
        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Equal(1002, error.ErrorCode);
    }
}
