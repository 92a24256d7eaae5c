using System.Diagnostics;
using Broker.Client;
using Broker.Testing;

namespace Broker.Perf.Peers.Systems;

/// <summary>
/// This broker, from this build (a child process as Broker.Perf starts it), through its own clients as an application
/// would use them: each producer a <see cref="BrokerProducer"/> (batches pipelined on one PublishStream, each message's
/// task completing once it is fsynced), a Consume stream per consumer acknowledging in frames.
/// <para>The producer runs without linger: a batch goes out as soon as the producer's loop takes it, so the open-loop
/// runs measure no wait of ours on purpose. Measured against a unary Publish per batch (the first version of this
/// runner): W2 end to end 131/141/149k against 119/112/131k msg/s in 3 interleaved pairs, and 58 against 73 server
/// CPU-s per million at 5k msg/s (docs/perf.md).</para>
/// </summary>
internal sealed class OurBroker : IPeerSystem
{
    private const string Topic = "peer";
    private const string Group = "workers";
    private Process? _process;
    private Uri? _address;
    private string? _data;

    public string Name => "broker";

    public string Durability => "fsync before the publish answer (group commit)";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _data = ServerProcess.NewDataDirectory("broker");
        (_process, _address) = await BrokerChildProcess.StartAsync(["--port", "0", "--http-port", "0", "--data", _data], Broker.Perf.RunnerGcBudget.KeepOutOf);
        using var admin = new BrokerClient(_address);
        await admin.CreateTopicAsync(Topic, cancellationToken: cancellationToken);
        await admin.CreateGroupAsync(Topic, Group, cancellationToken: cancellationToken);
    }

    public TimeSpan ServerCpuTime() => _process is null ? TimeSpan.Zero : Broker.Perf.ProcStat.CpuTimeOfTree(_process.Id);

    public Task<IPeerProducer> CreateProducerAsync(int index, CancellationToken cancellationToken) =>
        Task.FromResult<IPeerProducer>(new Producer(new BrokerProducer(new BrokerClientOptions { Listeners = _address!.ToString(), Linger = TimeSpan.Zero })));

    public async Task<IPeerConsumer> CreateConsumerAsync(int index, CancellationToken cancellationToken)
    {
        var client = new BrokerClient(_address!);
        var subscription = await client.SubscribeAsync(Topic, Group, new SubscribeOptions { MaxInFlight = 2_000 }, cancellationToken);
        return new Consumer(client, subscription);
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is not null)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
            _process.Dispose();
        }
        if (_data is not null && Directory.Exists(_data))
            Directory.Delete(_data, recursive: true);
    }

    /// <summary>Sends each message of the batch, then waits until every one is durable.</summary>
    private sealed class Producer(BrokerProducer producer) : IPeerProducer
    {
        public async Task PublishAsync(IReadOnlyList<byte[]> messages, CancellationToken cancellationToken)
        {
            var durable = new Task<PublishedMessage>[messages.Count];
            for (int i = 0; i < durable.Length; i++)
                durable[i] = await producer.SendAsync(Topic, messages[i], cancellationToken);
            await Task.WhenAll(durable);
        }

        public ValueTask DisposeAsync() => producer.DisposeAsync();
    }

    /// <summary>Takes what the stream has buffered (up to 100), handles it, and acknowledges it in one frame without waiting for the answer.</summary>
    private sealed class Consumer(BrokerClient client, BrokerSubscription subscription) : IPeerConsumer
    {
        public async Task RunAsync(Action<ReadOnlySpan<byte>> handle, CancellationToken cancellationToken)
        {
            var batch = new List<ReceivedMessage>(100);
            try
            {
                while (true)
                {
                    batch.Add(await subscription.ReceiveAsync(cancellationToken));
                    while (batch.Count < 100 && subscription.TryReceive(out var more))
                        batch.Add(more);
                    foreach (var message in batch)
                        handle(message.Payload.Span);
                    _ = subscription.AckAsync(batch.ToArray(), CancellationToken.None);
                    batch.Clear();
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await subscription.DisposeAsync();
            client.Dispose();
        }
    }
}
