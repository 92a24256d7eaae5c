using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>Every bad input gets its documented status and error code (docs/errors.md), and the broker keeps serving.</summary>
public sealed class ErrorTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task Publishing_to_an_unknown_topic_is_not_found()
    {
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync("no-such-topic", [OutgoingMessage.FromText("x")]));
        AssertError(error, StatusCode.NotFound, 1001);
    }

    [Theory]
    [InlineData("")]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData("spaces are bad")]
    public async Task Creating_a_topic_with_an_invalid_name_is_invalid_argument(string name)
    {
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateTopicAsync(name));
        AssertError(error, StatusCode.InvalidArgument, 1002);
    }

    [Fact]
    public async Task Creating_an_existing_topic_is_already_exists()
    {
        string topic = await shared.NewTopicAsync();
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateTopicAsync(topic, ifNotExists: false));
        AssertError(error, StatusCode.AlreadyExists, 1003);
    }

    [Fact]
    public async Task An_oversized_message_rejects_its_whole_batch_and_nothing_is_written()
    {
        string topic = await shared.NewTopicAsync();
        var batch = new[]
        {
            OutgoingMessage.FromText("fine"),
            new OutgoingMessage(new byte[(1 << 20) + 1]),
            OutgoingMessage.FromText("also fine"),
        };

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(topic, batch));

        AssertError(error, StatusCode.InvalidArgument, 1004);
        Assert.Equal(0UL, (await Client.DescribeTopicAsync(topic)).NextOffset);
        Assert.Equal(0, (await Client.PublishAsync(topic, [OutgoingMessage.FromText("after")])).FirstOffset);
    }

    [Fact]
    public async Task A_message_exactly_at_the_limit_is_accepted()
    {
        string topic = await shared.NewTopicAsync();
        var result = await Client.PublishAsync(topic, [new OutgoingMessage(new byte[1 << 20])]);
        Assert.Equal(1, result.Count);
    }

    [Fact]
    public async Task A_message_with_more_headers_than_the_format_holds_is_refused_and_nothing_is_written()
    {
        string topic = await shared.NewTopicAsync();
        var headers = Enumerable.Range(0, 70_000).ToDictionary(i => $"h{i}", _ => "");
        var batch = new[] { OutgoingMessage.FromText("first"), new OutgoingMessage("x"u8.ToArray(), default, headers) };

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(topic, batch));

        AssertError(error, StatusCode.InvalidArgument, 1000);
        Assert.Equal(0, (await Client.PublishAsync(topic, [OutgoingMessage.FromText("next")])).FirstOffset);
    }

    [Fact]
    public async Task An_empty_batch_is_invalid_argument()
    {
        string topic = await shared.NewTopicAsync();
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(topic, []));
        AssertError(error, StatusCode.InvalidArgument, 1005);
    }

    [Fact]
    public async Task Subscribing_to_an_unknown_topic_or_with_a_bad_group_name_fails_with_its_status()
    {
        var notFound = await Assert.ThrowsAsync<BrokerClientException>(() => Client.SubscribeAsync("no-such-topic", "g"));
        AssertError(notFound, StatusCode.NotFound, 1001);

        string topic = await shared.NewTopicAsync();
        var badGroup = await Assert.ThrowsAsync<BrokerClientException>(() => Client.SubscribeAsync(topic, "bad/group"));
        AssertError(badGroup, StatusCode.InvalidArgument, 1002);
    }

    [Fact]
    public async Task A_consume_stream_that_does_not_start_with_subscribe_is_invalid_argument()
    {
        var consumer = new Protocol.V1.Consumer.ConsumerClient(Client.Channel);
        using var call = consumer.Consume();
        await call.RequestStream.WriteAsync(new ConsumeRequest { Ack = new Ack { RequestId = 1 } });

        var error = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Equal("1000", error.Trailers.GetValue("broker-error-code"));
    }

    [Fact]
    public async Task Unknown_and_stale_acks_are_refused_one_by_one_and_the_stream_stays_open()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        await using var subscription = await Client.SubscribeAsync(topic, "g");
        var received = await Receive.ExactlyAsync(subscription, 2);

        var mixed = await subscription.AckAsync(
        [
            (received[0].Offset, received[0].Token),
            (received[1].Offset, received[1].Token + 1),
            (999, 5UL),
        ]);

        Assert.Equal(1, mixed.Accepted);
        Assert.Equal(2, mixed.Refused.Count);
        var stale = mixed.Refused.Single(r => r.Offset == received[1].Offset);
        AssertError(stale.Reason, StatusCode.FailedPrecondition, 1101);
        var unknown = mixed.Refused.Single(r => r.Offset == 999);
        AssertError(unknown.Reason, StatusCode.NotFound, 1100);

        var again = await subscription.AckAsync(received[0]);
        AssertError(Assert.Single(again.Refused).Reason, StatusCode.FailedPrecondition, 1101);
        Assert.Equal(1, (await subscription.AckAsync(received[1])).Accepted);
    }

    [Fact]
    public async Task A_subscribe_with_max_in_flight_over_the_limit_is_invalid_argument()
    {
        string topic = await shared.NewTopicAsync();
        var error = await Assert.ThrowsAsync<BrokerClientException>(() =>
            Client.SubscribeAsync(topic, "g", new SubscribeOptions { MaxInFlight = 1_000_000 }));
        AssertError(error, StatusCode.InvalidArgument, 1000);
    }

    private static void AssertError(BrokerClientException error, StatusCode status, int code)
    {
        Assert.Equal(status, error.Status);
        Assert.Equal(code, error.ErrorCode);
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }
}
