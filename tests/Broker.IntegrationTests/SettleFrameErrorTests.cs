using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// A settle frame with a bad value is refused whole, in its own answer; the Consume stream stays open and every other
/// delivery the consumer holds is untouched (no redelivery, no failed delivery counted).
/// </summary>
public sealed class SettleFrameErrorTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Fact]
    public async Task A_nack_delay_over_12_hours_is_refused_and_the_stream_keeps_its_deliveries()
    {
        var (topic, subscription, held) = await HoldTwoAsync();
        await using var _ = subscription;

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => subscription.NackAsync([held[0]], TimeSpan.FromHours(13)));

        AssertInvalidRequest(error);
        await AssertStreamAndDeliveriesIntactAsync(topic, subscription, held);
    }

    [Fact]
    public async Task An_extension_over_12_hours_is_refused_and_the_stream_keeps_its_deliveries()
    {
        var (topic, subscription, held) = await HoldTwoAsync();
        await using var _ = subscription;

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => subscription.ExtendAsync([held[0]], TimeSpan.FromMilliseconds(uint.MaxValue)));

        AssertInvalidRequest(error);
        await AssertStreamAndDeliveriesIntactAsync(topic, subscription, held);
    }

    [Fact]
    public async Task A_frame_of_more_than_10000_deliveries_is_refused_and_the_stream_keeps_its_deliveries()
    {
        var (topic, subscription, held) = await HoldTwoAsync();
        await using var _ = subscription;
        var tooMany = Enumerable.Range(0, 10_001).Select(i => (Offset: (long)i, Token: 1UL)).ToList();
        tooMany[0] = (held[0].Offset, held[0].Token);

        var error = await Assert.ThrowsAsync<BrokerClientException>(() => subscription.AckAsync(tooMany));

        AssertInvalidRequest(error);
        await AssertStreamAndDeliveriesIntactAsync(topic, subscription, held);
    }

    [Fact]
    public async Task A_refused_frame_is_answered_with_one_failure_without_a_delivery_and_its_request_id()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("a")]);
        var consumer = new Protocol.V1.Consumer.ConsumerClient(Client.Channel);
        using var call = consumer.Consume();
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = "g" } });
        var delivery = await NextAsync(call, ConsumeResponse.KindOneofCase.Deliveries);
        var item = delivery.Deliveries.Items[0];
        var reference = new Protocol.V1.DeliveryRef { Offset = item.Offset, Token = item.Token };

        await call.RequestStream.WriteAsync(new ConsumeRequest { Nack = new Nack { RequestId = 7, Action = (Protocol.V1.NackAction)7, Deliveries = { reference } } });
        await call.RequestStream.WriteAsync(new ConsumeRequest { Nack = new Nack { RequestId = 8, DelayMs = uint.MaxValue, Deliveries = { reference } } });
        await call.RequestStream.WriteAsync(new ConsumeRequest { Ack = new Ack { RequestId = 9, Deliveries = { reference } } });

        foreach (ulong refused in new ulong[] { 7, 8 })
        {
            var answer = (await NextAsync(call, ConsumeResponse.KindOneofCase.Settled)).Settled;
            Assert.Equal(refused, answer.RequestId);
            Assert.Equal(0U, answer.Accepted);
            var failure = Assert.Single(answer.Failures);
            Assert.Null(failure.Delivery);
            Assert.Equal((int)StatusCode.InvalidArgument, failure.Error.StatusCode);
            Assert.Equal(1000, failure.Error.ErrorCode);
        }
        var acked = (await NextAsync(call, ConsumeResponse.KindOneofCase.Settled)).Settled;
        Assert.Equal(9UL, acked.RequestId);
        Assert.Equal(1U, acked.Accepted);
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext());
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    private async Task<(string Topic, BrokerSubscription Subscription, List<ReceivedMessage> Held)> HoldTwoAsync()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b")]);
        var subscription = await Client.SubscribeAsync(topic, "g");
        return (topic, subscription, await Receive.ExactlyAsync(subscription, 2));
    }

    /// <summary>Both held deliveries are still this consumer's: acking them works, and none was counted as failed.</summary>
    private async Task AssertStreamAndDeliveriesIntactAsync(string topic, BrokerSubscription subscription, List<ReceivedMessage> held)
    {
        var acked = await subscription.AckAsync([.. held]);
        Assert.Equal(2, acked.Accepted);
        Assert.Empty(acked.Refused);
        var group = (await Client.DescribeTopicAsync(topic)).Groups.Single(g => g.Name == "g");
        Assert.Equal(0UL, group.RedeliveredTotal);
        Assert.Equal(2UL, group.AckFloor);
        Assert.Equal(1U, group.Consumers);
    }

    private static async Task<ConsumeResponse> NextAsync(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call, ConsumeResponse.KindOneofCase kind)
    {
        using var timeout = new CancellationTokenSource(Receive.Deadline);
        while (await call.ResponseStream.MoveNext(timeout.Token))
        {
            if (call.ResponseStream.Current.KindCase == kind)
                return call.ResponseStream.Current;
        }
        throw new InvalidOperationException($"the stream ended before a {kind} frame");
    }

    private static void AssertInvalidRequest(BrokerClientException error)
    {
        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Equal(1000, error.ErrorCode);
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }
}
