using System.Globalization;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using NATS.Net;

namespace Broker.Perf.Peers.Systems;

/// <summary>
/// NATS JetStream (Debian's nats-server) with file storage: a publish is acknowledged once the server wrote it, not
/// fsynced (JetStream syncs every two minutes by default), so it is not durable across a power cut. One durable pull
/// consumer shared by the competing consumers, explicit acks per message.
/// </summary>
internal sealed class NatsJetStream : IPeerSystem
{
    private const string Stream = "peer";
    private const string Subject = "peer.jobs";
    private const string Durable = "workers";
    private ServerProcess? _server;

    public string Name => "nats-file";

    public string Durability => "written to the file before the ack, fsynced every 2 minutes: not durable";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        string data = ServerProcess.NewDataDirectory(Name);
        int port = ServerProcess.FreePort();
        _server = await ServerProcess.StartAsync("nats-server",
            ["-a", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), "-js", "-sd", data], data, port, null,
            TimeSpan.FromSeconds(20), cancellationToken);
        await using var connection = Connect();
        var js = connection.CreateJetStreamContext();
        await js.CreateStreamAsync(new StreamConfig(Stream, [Subject]) { Storage = StreamConfigStorage.File }, cancellationToken);
        await js.CreateOrUpdateConsumerAsync(Stream, new ConsumerConfig(Durable)
        {
            AckPolicy = ConsumerConfigAckPolicy.Explicit,
            MaxAckPending = 20_000,
        }, cancellationToken);
    }

    private NatsConnection Connect() => new(new NatsOpts { Url = $"nats://127.0.0.1:{_server!.Port}" });

    public TimeSpan ServerCpuTime() => _server?.CpuTime() ?? TimeSpan.Zero;

    public Task<IPeerProducer> CreateProducerAsync(int index, CancellationToken cancellationToken) =>
        Task.FromResult<IPeerProducer>(new Producer(Connect()));

    public async Task<IPeerConsumer> CreateConsumerAsync(int index, CancellationToken cancellationToken)
    {
        var connection = Connect();
        var consumer = await connection.CreateJetStreamContext().GetConsumerAsync(Stream, Durable, cancellationToken);
        return new Consumer(connection, consumer);
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
            await _server.DisposeAsync();
    }

    private sealed class Producer(NatsConnection connection) : IPeerProducer
    {
        private readonly INatsJSContext _js = connection.CreateJetStreamContext();

        public async Task PublishAsync(IReadOnlyList<byte[]> messages, CancellationToken cancellationToken)
        {
            var acks = new Task<PubAckResponse>[messages.Count];
            for (int i = 0; i < messages.Count; i++)
                acks[i] = _js.PublishAsync(Subject, messages[i], cancellationToken: cancellationToken).AsTask();
            foreach (var ack in await Task.WhenAll(acks))
                ack.EnsureSuccess();
        }

        public ValueTask DisposeAsync() => connection.DisposeAsync();
    }

    private sealed class Consumer(NatsConnection connection, INatsJSConsumer consumer) : IPeerConsumer
    {
        public async Task RunAsync(Action<ReadOnlySpan<byte>> handle, CancellationToken cancellationToken)
        {
            try
            {
                await foreach (var message in consumer.ConsumeAsync<byte[]>(opts: new NatsJSConsumeOpts { MaxMsgs = 1_000 }, cancellationToken: cancellationToken))
                {
                    handle(message.Data);
                    await message.AckAsync(cancellationToken: cancellationToken);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
        }

        public ValueTask DisposeAsync() => connection.DisposeAsync();
    }
}
