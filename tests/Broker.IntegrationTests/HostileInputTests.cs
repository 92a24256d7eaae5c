using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Inputs a careless or hostile client sends: bad names, absurd header counts, the largest value of every numeric
/// field, protocol misuse, many streams, cut connections. Each gets a clear status and error code; the broker logs no
/// error, keeps serving, and what was published before is intact.
/// </summary>
public sealed class HostileInputTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private BrokerClient Client => shared.Client;

    [Theory]
    [InlineData("nul\0byte")]
    [InlineData("ünïcödé")]
    [InlineData("emoji-😀")]
    [InlineData("a/b")]
    [InlineData("..\\up")]
    [InlineData("with space")]
    [InlineData(" ")]
    public async Task Bad_names_are_invalid_name_everywhere(string name)
    {
        string topic = await NewTopicWithOneMessageAsync();

        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateTopicAsync(name)), StatusCode.InvalidArgument, 1002);
        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(name, [OutgoingMessage.FromText("x")])), StatusCode.InvalidArgument, 1002);
        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.DescribeTopicAsync(name)), StatusCode.InvalidArgument, 1002);
        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.SubscribeAsync(topic, name)), StatusCode.InvalidArgument, 1002);
        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateGroupAsync(topic, name)), StatusCode.InvalidArgument, 1002);

        Assert.DoesNotContain(name, await Client.ListTopicsAsync());
        await AssertIntactAsync(topic);
    }

    [Fact]
    public async Task A_message_with_100000_headers_is_refused_on_publish_and_on_a_publish_stream()
    {
        string topic = await NewTopicWithOneMessageAsync();
        var headers = Enumerable.Range(0, 100_000).ToDictionary(i => $"h{i}", _ => "v");
        var huge = new OutgoingMessage("x"u8.ToArray(), default, headers);

        AssertError(await Assert.ThrowsAsync<BrokerClientException>(() => Client.PublishAsync(topic, [huge])), StatusCode.InvalidArgument, 1000);

        var publisher = new Publisher.PublisherClient(Client.Channel);
        using var stream = publisher.PublishStream();
        var request = new PublishRequest { Topic = topic, RequestId = ulong.MaxValue };
        var message = new Message { Payload = Google.Protobuf.ByteString.CopyFromUtf8("x") };
        message.Headers.Add(headers);
        request.Messages.Add(message);
        await stream.RequestStream.WriteAsync(request);
        await stream.RequestStream.CompleteAsync();
        Assert.True(await stream.ResponseStream.MoveNext());
        Assert.Equal(ulong.MaxValue, stream.ResponseStream.Current.RequestId);
        Assert.Equal(1000, stream.ResponseStream.Current.Error.ErrorCode);
        Assert.False(await stream.ResponseStream.MoveNext());
        await AssertIntactAsync(topic);
    }

    [Fact]
    public async Task The_largest_value_of_every_numeric_subscribe_and_group_field_is_refused_or_clamped()
    {
        string topic = await NewTopicWithOneMessageAsync();
        var consumer = new Protocol.V1.Consumer.ConsumerClient(Client.Channel);
        var refused = new[]
        {
            new Subscribe { Topic = topic, Group = "g1", MaxInFlight = uint.MaxValue },
            new Subscribe { Topic = topic, Group = "g2", VisibilityTimeoutMs = uint.MaxValue },
            new Subscribe { Topic = topic, Group = "g3", GroupSettings = new GroupSettings { MaxDeliveries = uint.MaxValue } },
            new Subscribe { Topic = topic, Group = "g4", GroupSettings = new GroupSettings { VisibilityTimeoutMs = uint.MaxValue } },
            new Subscribe { Topic = topic, Group = "g5", Start = (StartPosition)int.MaxValue },
        };
        foreach (var subscribe in refused)
        {
            using var call = consumer.Consume();
            await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = subscribe });
            var error = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext());
            Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
            Assert.Equal("1000", error.Trailers.GetValue("broker-error-code"));
        }

        // Past the end means "latest"; the furthest time finds nothing yet: both are valid groups that get new messages.
        await using var atOffset = await Client.SubscribeAsync(topic, "far-offset", new SubscribeOptions { Start = StartAt.AtOffset(long.MaxValue) });
        await using var atTime = await Client.SubscribeAsync(topic, "far-time", new SubscribeOptions { Start = StartAt.AtTime(DateTimeOffset.MaxValue) });
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("new")]);
        Assert.Equal("new", (await Receive.ExactlyAsync(atOffset, 1))[0].PayloadText);
        Assert.Equal("new", (await Receive.ExactlyAsync(atTime, 1))[0].PayloadText);

        var redrive = await Client.RedriveAsync(topic + ".dlq", int.MaxValue);
        Assert.Equal(0U, redrive.Moved);
        AssertNoErrorLogged();
    }

    [Fact]
    public async Task The_largest_offset_token_and_request_id_in_a_settle_frame_are_answered_per_item()
    {
        string topic = await NewTopicWithOneMessageAsync();
        var consumer = new Protocol.V1.Consumer.ConsumerClient(Client.Channel);
        using var call = consumer.Consume();
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = "g" } });
        await call.RequestStream.WriteAsync(new ConsumeRequest
        {
            Ack = new Ack { RequestId = ulong.MaxValue, Deliveries = { new Protocol.V1.DeliveryRef { Offset = ulong.MaxValue, Token = ulong.MaxValue } } },
        });

        using var deadline = new CancellationTokenSource(Receive.Deadline);
        SettleResponse? answer = null;
        while (answer is null && await call.ResponseStream.MoveNext(deadline.Token))
            answer = call.ResponseStream.Current.Settled;
        Assert.NotNull(answer);
        Assert.Equal(ulong.MaxValue, answer.RequestId);
        Assert.Equal(0U, answer.Accepted);
        Assert.Equal(1100, Assert.Single(answer.Failures).Error.ErrorCode);
        await call.RequestStream.CompleteAsync();
        await AssertIntactAsync(topic);
    }

    [Fact]
    public async Task A_second_subscribe_on_one_stream_ends_it_with_invalid_argument_and_its_deliveries_go_back()
    {
        string topic = await NewTopicWithOneMessageAsync();
        var consumer = new Protocol.V1.Consumer.ConsumerClient(Client.Channel);
        using var call = consumer.Consume();
        var subscribe = new ConsumeRequest { Subscribe = new Subscribe { Topic = topic, Group = "g" } };
        await call.RequestStream.WriteAsync(subscribe);
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (await call.ResponseStream.MoveNext(deadline.Token) && call.ResponseStream.Current.KindCase != ConsumeResponse.KindOneofCase.Deliveries)
        {
        }

        await call.RequestStream.WriteAsync(subscribe);

        var error = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await call.ResponseStream.MoveNext(deadline.Token))
            {
            }
        });
        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Equal("1000", error.Trailers.GetValue("broker-error-code"));
        await using var next = await Client.SubscribeAsync(topic, "g");
        var again = (await Receive.ExactlyAsync(next, 1))[0];
        Assert.Equal(2, again.Attempt);
        AssertNoErrorLogged();
    }

    [Fact]
    public async Task A_connection_cut_mid_stream_gives_its_deliveries_back_and_the_broker_serves_on()
    {
        string topic = await NewTopicWithOneMessageAsync();
        var cut = new BrokerClient(shared.Broker.Host.Address);
        var doomed = await cut.SubscribeAsync(topic, "g");
        Assert.Single(await Receive.ExactlyAsync(doomed, 1));
        var publishing = cut.PublishAsync(topic, [OutgoingMessage.FromText("in flight")]);

        cut.Dispose(); // every call on the connection is reset under the broker

        // The stream fails; before that it may still hand over the message published in flight, if it got there first.
        using (var deadline = new CancellationTokenSource(Receive.Deadline))
        {
            Exception? ended = null;
            while (ended is null)
            {
                try
                {
                    Assert.Equal(1, (await doomed.ReceiveAsync(deadline.Token)).Offset);
                }
                catch (Exception error) when (error is not Xunit.Sdk.XunitException && !deadline.IsCancellationRequested)
                {
                    ended = error;
                }
            }
        }
        try
        {
            await publishing;
        }
        catch (BrokerClientException)
        {
            // Cut before its answer: not acknowledged, may or may not be in the log.
        }
        await using var survivor = await Client.SubscribeAsync(topic, "g");
        var back = (await Receive.ExactlyAsync(survivor, 1))[0];
        Assert.Equal(0, back.Offset);
        Assert.Equal(2, back.Attempt);
        AssertNoErrorLogged();
    }

    [Fact]
    public async Task A_thousand_concurrent_streams_each_get_their_share()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, Enumerable.Range(0, 1000).Select(i => OutgoingMessage.FromText($"m{i}")));
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var subscriptions = await Task.WhenAll(Enumerable.Range(0, 1000).Select(_ =>
            Client.SubscribeAsync(topic, "many", new SubscribeOptions { MaxInFlight = 1 }, deadline.Token)));
        try
        {
            // Each stream holds at most one message and never acks: the 1000 messages spread over the 1000 streams.
            var received = await Task.WhenAll(subscriptions.Select(s => s.ReceiveAsync(deadline.Token).AsTask()));
            Assert.Equal(1000, received.Select(m => m.Offset).Distinct().Count());
            var group = (await Client.DescribeTopicAsync(topic)).Groups.Single(g => g.Name == "many");
            Assert.Equal(1000U, group.Consumers);
            Assert.Equal(1000UL, group.InFlight);
        }
        finally
        {
            await Task.WhenAll(subscriptions.Select(s => s.DisposeAsync().AsTask()));
        }
        AssertNoErrorLogged();
    }

    private async Task<string> NewTopicWithOneMessageAsync()
    {
        string topic = await shared.NewTopicAsync();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("before")]);
        return topic;
    }

    /// <summary>No error logged, still serving, and the topic's first message is still there.</summary>
    private async Task AssertIntactAsync(string topic)
    {
        AssertNoErrorLogged();
        await Client.PublishAsync(topic, [OutgoingMessage.FromText("after")]);
        var messages = await TopicReader.ReadAllAsync(Client, topic, 2);
        Assert.Equal(["before", "after"], messages.Select(m => m.PayloadText));
    }

    private void AssertNoErrorLogged()
    {
        var errors = shared.Broker.Logs.Errors;
        Assert.True(errors.Count == 0, string.Join("\n", errors));
    }

    private static void AssertError(BrokerClientException error, StatusCode status, int code)
    {
        Assert.Equal(status, error.Status);
        Assert.Equal(code, error.ErrorCode);
    }
}
