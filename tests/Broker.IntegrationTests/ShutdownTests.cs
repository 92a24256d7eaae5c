using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Broker.Protocol.V1;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// SIGTERM of a child broker with consumers attached (docs/semantics.md, "Shutdown"). Invariants: after the signal no
/// new delivery is handed out; new calls get UNAVAILABLE with error 1201 (not a refused connection); an ack sent
/// during the grace is confirmed and holds after a restart; a consumer still holding deliveries at the end of the
/// grace has its stream ended with UNAVAILABLE/1201 and its messages come back; the process exits with 0, logs each
/// phase, and logs nothing at error level.
/// </summary>
[Collection(RunAlone.Name)]
public sealed class ShutdownTests
{
    private const string ShutdownCategory = "Broker.Server.Hosting.ShutdownDrain";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Sigterm_stops_deliveries_refuses_new_calls_confirms_acks_in_the_grace_then_ends_streams_and_exits_cleanly()
    {
        string data = TestBroker.NewDataDirectory();
        try
        {
            // 1. Ten jobs; "acker" holds offsets 0 and 1 (its maximum), "holder" holds offset 2; seven more wait.
            using (var broker = await BrokerProcess.StartAsync(data, "--ShutdownGraceMs", "8000"))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync("jobs");
                await client.PublishAsync("jobs", Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText($"job {i}")));
                var consumers = new Protocol.V1.Consumer.ConsumerClient(client.Channel);
                using var acker = consumers.Consume();
                var ackerHeld = await SubscribeAndReceiveAsync(acker, maxInFlight: 2);
                using var holder = consumers.Consume();
                var holderHeld = await SubscribeAndReceiveAsync(holder, maxInFlight: 1);
                Assert.Equal([0UL, 1UL], ackerHeld.Select(d => d.Offset));
                Assert.Equal([2UL], holderHeld.Select(d => d.Offset));

                // 2. SIGTERM; the broker reports that deliveries have stopped.
                broker.Terminate();
                await broker.WaitForLineAsync($"{ShutdownCategory}[2301]", Deadline);

                // 3. The acker is told the broker drains, acks what it holds: the ack is confirmed, and although that
                //    returned its credit and seven messages wait, no delivery follows; its stream ends with 1201.
                Assert.Equal(ConsumeResponse.KindOneofCase.Draining, (await NextAsync(acker)).KindCase);
                var ack = new Ack { RequestId = 1 };
                ack.Deliveries.Add(ackerHeld.Select(d => new DeliveryRef { Offset = d.Offset, Token = d.Token }));
                await acker.RequestStream.WriteAsync(new ConsumeRequest { Ack = ack });
                var (ackerFrames, ackerEnd) = await ReadToEndAsync(acker);
                Assert.DoesNotContain(ackerFrames, f => f.KindCase == ConsumeResponse.KindOneofCase.Deliveries);
                var settled = Assert.Single(ackerFrames, f => f.KindCase == ConsumeResponse.KindOneofCase.Settled).Settled;
                Assert.Equal(1UL, settled.RequestId);
                Assert.Equal(2U, settled.Accepted);
                Assert.Empty(settled.Failures);
                Assert.Single(ackerFrames, f => f.KindCase == ConsumeResponse.KindOneofCase.Drained);
                AssertShuttingDown(ackerEnd);

                // 4. New calls during the drain: a status with error 1201, not a refused connection.
                var publish = await Assert.ThrowsAsync<BrokerClientException>(() => client.PublishAsync("jobs", [OutgoingMessage.FromText("late")]));
                Assert.Equal((StatusCode.Unavailable, 1201), (publish.Status, publish.ErrorCode));
                var subscribe = await Assert.ThrowsAsync<BrokerClientException>(() => client.SubscribeAsync("jobs", "workers"));
                Assert.Equal((StatusCode.Unavailable, 1201), (subscribe.Status, subscribe.ErrorCode));

                // 5. The holder never settles: told the broker drains, then at the grace's end that its stream is done,
                //    and (once it half-closed) UNAVAILABLE/1201.
                var (holderFrames, holderEnd) = await ReadToEndAsync(holder);
                Assert.Equal([ConsumeResponse.KindOneofCase.Draining, ConsumeResponse.KindOneofCase.Drained], holderFrames.Select(f => f.KindCase));
                AssertShuttingDown(holderEnd);

                // 6. Exit code 0, one line per phase, nothing at error level.
                Assert.Equal(0, await broker.WaitForExitAsync(Deadline));
                foreach (int phase in new[] { 2301, 2302, 2303, 2304, 2305, 2306 })
                    Assert.Contains(broker.Output, line => line.Contains($"{ShutdownCategory}[{phase}]", StringComparison.Ordinal));
                Assert.DoesNotContain(broker.Output, line => line.StartsWith("fail:", StringComparison.Ordinal) || line.StartsWith("crit:", StringComparison.Ordinal));
                Assert.DoesNotContain(broker.Output, line => line.Contains("Exception", StringComparison.Ordinal));
            }

            // 7. After a restart: the acked jobs never come back; the holder's job comes back as a failed delivery
            //    (attempt 2); the jobs never handed out come as first deliveries.
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await using var workers = await client.SubscribeAsync("jobs", "workers", new SubscribeOptions { MaxInFlight = 100 });
                var again = await Receive.ExactlyAsync(workers, 8);
                await Receive.NothingMoreAsync(workers);
                Assert.Equal(Enumerable.Range(2, 8).Select(i => (long)i), again.Select(m => m.Offset).Order());
                Assert.All(again, m => Assert.Equal(m.Offset == 2 ? 2 : 1, m.Attempt));
            }
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

    // This test failed about one full run in four (the ack in step 2 with "The HTTP/2 server closed the connection"):
    // the broker ended the stream as soon as the consumer held nothing and closed the connection right after, and the
    // SDK, still sending on the stream, lost the answers it had not read yet. The broker now waits for the half-close
    // (see the next test).
    [Fact]
    public async Task The_sdk_releases_what_it_never_handed_out_so_those_messages_come_back_with_their_attempt_count_unchanged()
    {
        await using var broker = await TestBroker.StartAsync(options => options.ShutdownGraceMs = 30_000);
        await broker.Client.CreateTopicAsync("jobs");
        await broker.Client.PublishAsync("jobs", Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText($"job {i}")));

        // 1. One fetch hands all ten to the subscription; the application takes one, nine wait in the SDK's buffer.
        //    (Its own client: the broker's restart below disposes the test broker's client.)
        using var consumerClient = new BrokerClient(broker.Host.Address);
        await using var subscription = await consumerClient.SubscribeAsync("jobs", "workers", new SubscribeOptions { MaxInFlight = 10 });
        using var timeout = new CancellationTokenSource(Deadline);
        var taken = await subscription.ReceiveAsync(timeout.Token);
        Assert.Equal(0, taken.Offset);
        // The broker may hand the ten over in more than one fetch: wait (bounded) until all are out.
        while ((long)(await broker.Client.DescribeTopicAsync("jobs", timeout.Token)).Groups.Single().InFlight < 10)
            await Task.Delay(10, timeout.Token);

        // 2. Shut down: the application learns it from ReceiveAsync (it may still be handed some of the buffered ones
        //    first, if it asks before the broker's "draining" frame arrives), and its acks still hold.
        var restart = broker.RestartAsync();
        var handedOut = new List<ReceivedMessage> { taken };
        BrokerClientException? ended = null;
        while (ended is null)
        {
            try
            {
                handedOut.Add(await subscription.ReceiveAsync(timeout.Token));
            }
            catch (BrokerClientException error)
            {
                ended = error;
            }
        }
        Assert.Equal((StatusCode.Unavailable, 1201), (ended.Status, ended.ErrorCode));
        Assert.Equal(handedOut.Count, (await subscription.AckAsync(handedOut, CancellationToken.None)).Accepted);
        await restart.WaitAsync(Deadline);

        // 3. The ones never handed out come back as first deliveries: released, not counted as failed.
        int released = 10 - handedOut.Count;
        await using var again = await broker.Client.SubscribeAsync("jobs", "workers", new SubscribeOptions { MaxInFlight = 100 });
        var back = await Receive.ExactlyAsync(again, released);
        await Receive.NothingMoreAsync(again);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i).Except(handedOut.Select(m => m.Offset)), back.Select(m => m.Offset).Order());
        Assert.All(back, m => Assert.Equal(1, m.Attempt));
    }

    [Fact]
    public async Task A_drained_stream_ends_only_after_the_consumer_half_closed_so_answers_it_reads_after_the_broker_stopped_are_there()
    {
        await using var broker = await TestBroker.StartAsync(options => options.ShutdownGraceMs = 30_000);
        await broker.Client.CreateTopicAsync("jobs");
        await broker.Client.PublishAsync("jobs", [OutgoingMessage.FromText("job")]);
        // Its own channel: the restart below disposes the test broker's client.
        using var consumerClient = new BrokerClient(broker.Host.Address);
        using var consumer = new Protocol.V1.Consumer.ConsumerClient(consumerClient.Channel).Consume();
        var held = Assert.Single(await SubscribeAndReceiveAsync(consumer, maxInFlight: 1));

        // 1. Shut down; the consumer acks what it holds, and is told its stream is done.
        var restart = broker.RestartAsync();
        Assert.Equal(ConsumeResponse.KindOneofCase.Draining, (await NextAsync(consumer)).KindCase);
        var ack = new Ack { RequestId = 7 };
        ack.Deliveries.Add(new DeliveryRef { Offset = held.Offset, Token = held.Token });
        await consumer.RequestStream.WriteAsync(new ConsumeRequest { Ack = ack });
        var frames = new List<ConsumeResponse>();
        do
            frames.Add(await NextAsync(consumer));
        while (frames[^1].KindCase != ConsumeResponse.KindOneofCase.Drained);

        // 2. It half-closes and reads nothing more until the broker has stopped (its connection closed) and restarted:
        //    what the broker sent before closing is still there, the ack's answer and the status.
        await consumer.RequestStream.CompleteAsync();
        await restart.WaitAsync(Deadline);
        var (rest, end) = await ReadToEndAsync(consumer);
        var settled = Assert.Single(frames.Concat(rest), f => f.KindCase == ConsumeResponse.KindOneofCase.Settled).Settled;
        Assert.Equal((7UL, 1U), (settled.RequestId, settled.Accepted));
        AssertShuttingDown(end);
    }

    [Fact]
    public async Task A_drained_publish_stream_ends_only_after_the_producer_half_closed_so_its_end_is_read_after_the_broker_stopped()
    {
        await using var broker = await TestBroker.StartAsync(options => options.ShutdownGraceMs = 30_000);
        await broker.Client.CreateTopicAsync("jobs");
        using var producerClient = new BrokerClient(broker.Host.Address);
        using var stream = new Publisher.PublisherClient(producerClient.Channel).PublishStream();
        using var timeout = new CancellationTokenSource(Deadline);
        static PublishRequest Batch(ulong id) => new() { Topic = "jobs", RequestId = id, Messages = { new Message { Payload = Google.Protobuf.ByteString.CopyFromUtf8($"job {id}") } } };

        // 1. A batch answered; another sent as the shutdown begins: answered (stored) or not, before "drained".
        await stream.RequestStream.WriteAsync(Batch(1));
        Assert.True(await stream.ResponseStream.MoveNext(timeout.Token));
        Assert.Equal((1UL, 1U), (stream.ResponseStream.Current.RequestId, stream.ResponseStream.Current.Count));
        await stream.RequestStream.WriteAsync(Batch(2));
        var restart = broker.RestartAsync();
        var answers = new List<PublishResponse>();
        do
        {
            Assert.True(await stream.ResponseStream.MoveNext(timeout.Token), "the stream ended before saying it is drained");
            answers.Add(stream.ResponseStream.Current);
        }
        while (!answers[^1].Drained);

        // 2. The producer half-closes and reads nothing more until the broker has stopped and restarted: the stream's
        //    end (UNAVAILABLE 1201) is still there to read, not a connection closed under it.
        await stream.RequestStream.CompleteAsync();
        await restart.WaitAsync(Deadline);
        var end = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await stream.ResponseStream.MoveNext(timeout.Token))
                answers.Add(stream.ResponseStream.Current);
        });
        AssertShuttingDown(end);
        // Whatever was answered is stored; batch 2, if not answered, was not.
        var stored = await TopicReader.ReadAllAsync(broker.Client, "jobs", (int)(await broker.Client.DescribeTopicAsync("jobs")).NextOffset);
        Assert.Equal(answers.Any(a => a.RequestId == 2) ? ["job 1", "job 2"] : ["job 1"], stored.Select(m => m.PayloadText));
    }

    [Fact]
    public async Task Publishes_racing_a_shutdown_are_answered_once_durable_or_refused_as_unavailable_and_every_answered_one_holds()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("jobs");
        using var producerClient = new BrokerClient(broker.Host.Address);
        var answered = new System.Collections.Concurrent.ConcurrentDictionary<long, string>();
        var enough = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // 1. Four producers publish until the broker stops answering; each ends at its first failure.
        var producers = Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            for (int sequence = 0; ; sequence++)
            {
                string text = $"{p}-{sequence}";
                try
                {
                    var result = await producerClient.PublishAsync("jobs", [OutgoingMessage.FromText(text)]);
                    answered[result.FirstOffset] = text;
                    if (answered.Count >= 200)
                        enough.TrySetResult();
                }
                catch (BrokerClientException error)
                {
                    return error;
                }
            }
        })).ToList();

        // 2. Shut down (and restart) while they publish.
        await enough.Task.WaitAsync(Deadline);
        await broker.RestartAsync();
        var failures = await Task.WhenAll(producers).WaitAsync(Deadline);

        // 3. Refused means UNAVAILABLE: 1201 during the drain, or no code once the listener is closed. Every answered
        //    publish is in the log after the restart, at its offset.
        Assert.All(failures, f => Assert.Equal(StatusCode.Unavailable, f.Status));
        Assert.All(failures, f => Assert.Contains(f.ErrorCode, new[] { 0, 1201 }));
        var stored = await TopicReader.ReadAllAsync(broker.Client, "jobs", (int)(await broker.Client.DescribeTopicAsync("jobs")).NextOffset);
        foreach (var (offset, text) in answered)
            Assert.Equal(text, stored.Single(m => m.Offset == offset).PayloadText);
    }

    private static async Task<List<Delivery>> SubscribeAndReceiveAsync(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call, uint maxInFlight)
    {
        await call.RequestStream.WriteAsync(new ConsumeRequest { Subscribe = new Subscribe { Topic = "jobs", Group = "workers", MaxInFlight = maxInFlight } });
        Assert.Equal(ConsumeResponse.KindOneofCase.Subscribed, (await NextAsync(call)).KindCase);
        var held = new List<Delivery>();
        while (held.Count < maxInFlight)
            held.AddRange((await NextAsync(call)).Deliveries.Items);
        return held;
    }

    private static async Task<ConsumeResponse> NextAsync(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call)
    {
        using var timeout = new CancellationTokenSource(Deadline);
        Assert.True(await call.ResponseStream.MoveNext(timeout.Token), "the stream ended early");
        return call.ResponseStream.Current;
    }

    /// <summary>Every frame until the stream ends, and how it ended (it must end with an error status).</summary>
    private static async Task<(List<ConsumeResponse> Frames, RpcException End)> ReadToEndAsync(AsyncDuplexStreamingCall<ConsumeRequest, ConsumeResponse> call)
    {
        using var timeout = new CancellationTokenSource(Deadline);
        var frames = new List<ConsumeResponse>();
        try
        {
            while (await call.ResponseStream.MoveNext(timeout.Token))
            {
                frames.Add(call.ResponseStream.Current);
                // A well-behaved consumer half-closes when told its stream is done; the broker then ends it at once.
                if (call.ResponseStream.Current.KindCase == ConsumeResponse.KindOneofCase.Drained)
                    await call.RequestStream.CompleteAsync();
            }
        }
        catch (RpcException end)
        {
            return (frames, end);
        }
        Assert.Fail($"the stream ended with {call.GetStatus().StatusCode}, not an error status");
        return default;
    }

    private static void AssertShuttingDown(RpcException end)
    {
        Assert.Equal(StatusCode.Unavailable, end.StatusCode);
        Assert.Equal("1201", end.Trailers.GetValue("broker-error-code"));
    }
}
