using System.Collections.Concurrent;
using System.Text.Json;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// A child broker SIGKILLed and restarted on the same folder and port while an SDK producer publishes and an SDK
/// consumer acks. Invariants: every message the producer sent is published (its task completes) and consumed at least
/// once; no message whose ack was confirmed is delivered again; acks cut off by the kill are reported, not confirmed.
/// </summary>
public sealed class BrokerRestartTests
{
    private const int Messages = 2_000;

    [Fact]
    public async Task A_broker_killed_and_restarted_under_a_producer_and_a_consumer_loses_nothing_and_redelivers_no_confirmed_ack()
    {
        string data = TestBroker.NewDataDirectory();
        int port = SdkTesting.FreePort();
        string[] arguments = ["--port", port.ToString(), "--http-port", "0", "--data", data];
        var broker = await BrokerProcess.StartAsync(arguments, new Dictionary<string, string>());
        try
        {
            var settings = SdkTesting.Settings($"127.0.0.1:{port}", o =>
            {
                o.Topic = "restart";
                o.MaxInFlight = 50;
                o.MaxBatchMessages = 50;
                o.Linger = TimeSpan.FromMilliseconds(2);
            });
            await using var producer = new BrokerProducer(settings, null, null);
            await using var consumer = new BrokerConsumer(settings, null, null);
            await consumer.ConnectAsync();   // the group exists before the first publish, and starts at the earliest

            var confirmed = new ConcurrentDictionary<long, int>();   // offset → n, acks the broker confirmed
            var seen = new ConcurrentDictionary<int, bool>();        // every n delivered at least once
            var violations = new ConcurrentQueue<string>();
            int unconfirmed = 0;
            var halfway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var allSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var stop = new CancellationTokenSource();

            var consuming = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    BrokerMessage message;
                    try
                    {
                        message = await consumer.ReceiveAsync(stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    int n = message.Value<int>();
                    if (confirmed.ContainsKey(message.Offset))
                        violations.Enqueue($"offset {message.Offset} delivered again (attempt {message.Attempt}) after its ack was confirmed");
                    seen[n] = true;
                    try
                    {
                        await message.AckAsync();
                        confirmed[message.Offset] = n;
                    }
                    catch (SettleNotConfirmedException)
                    {
                        Interlocked.Increment(ref unconfirmed);
                    }
                    if (confirmed.Count >= Messages / 4)
                        halfway.TrySetResult();
                    if (seen.Count == Messages)
                        allSeen.TrySetResult();
                }
            });

            var sending = Task.Run(async () =>
            {
                var durable = new List<Task<PublishedMessage>>();
                for (int n = 0; n < Messages; n++)
                {
                    durable.Add(await producer.SendAsync("restart", n));
                    if (n == Messages / 2)
                        await halfway.Task;   // the kill falls in the middle of publishing and consuming
                }
                return await Task.WhenAll(durable);
            });

            // 1. Kill the broker once a quarter is consumed and acked, and restart it on the same folder and port.
            await halfway.Task.WaitAsync(TimeSpan.FromSeconds(120));
            broker.Kill();
            broker.Dispose();
            broker = await BrokerProcess.StartAsync(arguments, new Dictionary<string, string>());

            // 2. Everything the producer sent is published; everything published is consumed.
            var published = await sending.WaitAsync(TimeSpan.FromSeconds(180));
            Assert.Equal(Messages, published.Length);
            await allSeen.Task.WaitAsync(TimeSpan.FromSeconds(180));
            stop.Cancel();
            await consuming.WaitAsync(TimeSpan.FromSeconds(30));

            Assert.Empty(violations);
            Assert.True(consumer.Reconnects >= 1, "the consumer never noticed the restart");
            Assert.Equal(Enumerable.Range(0, Messages), seen.Keys.Order());
        }
        finally
        {
            broker.Dispose();
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
