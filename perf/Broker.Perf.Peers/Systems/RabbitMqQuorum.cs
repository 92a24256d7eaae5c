using System.Globalization;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Broker.Perf.Peers.Systems;

/// <summary>
/// RabbitMQ (Debian's rabbitmq-server) with a quorum queue: publisher confirms come after the Raft log's fsync, so a
/// confirmed message is durable. Each producer has a channel with confirmations tracked (a publish completes at its
/// confirm); consumers share the queue with a prefetch of 2,000 and acknowledge each message.
/// </summary>
internal sealed class RabbitMqQuorum : IPeerSystem
{
    private const string Queue = "peer";
    private ServerProcess? _server;

    public string Name => "rabbitmq-quorum";

    public string Durability => "quorum queue: confirm after the log's fsync";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        string data = ServerProcess.NewDataDirectory(Name);
        int port = ServerProcess.FreePort();
        string plugins = Path.Combine(data, "enabled_plugins");
        await File.WriteAllTextAsync(plugins, "[].", cancellationToken);
        // A node of its own: name, ports, folders and plugin list all in the run's folder, so it touches nothing else.
        var environment = new Dictionary<string, string>
        {
            ["RABBITMQ_NODENAME"] = $"perf{port}@localhost",
            ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1",
            ["RABBITMQ_NODE_PORT"] = port.ToString(CultureInfo.InvariantCulture),
            ["RABBITMQ_DIST_PORT"] = ServerProcess.FreePort().ToString(CultureInfo.InvariantCulture),
            ["RABBITMQ_MNESIA_BASE"] = Path.Combine(data, "mnesia"),
            ["RABBITMQ_LOG_BASE"] = Path.Combine(data, "log"),
            ["RABBITMQ_ENABLED_PLUGINS_FILE"] = plugins,
            ["RABBITMQ_CONFIG_FILE"] = Path.Combine(data, "rabbitmq"),
            ["RABBITMQ_ADVANCED_CONFIG_FILE"] = Path.Combine(data, "advanced.config"),
        };
        // The server itself, not /usr/sbin/rabbitmq-server: that wrapper switches to the rabbitmq user, who cannot write the run's folder.
        _server = await ServerProcess.StartAsync("/usr/lib/rabbitmq/bin/rabbitmq-server", [], data, port, environment, TimeSpan.FromSeconds(90), cancellationToken);
        await using var connection = await ConnectAsync(cancellationToken);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken);
        await channel.QueueDeclareAsync(Queue, durable: true, exclusive: false, autoDelete: false,
            arguments: new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken: cancellationToken);
    }

    private Task<IConnection> ConnectAsync(CancellationToken cancellationToken) =>
        new ConnectionFactory { HostName = "127.0.0.1", Port = _server!.Port }.CreateConnectionAsync(cancellationToken);

    public TimeSpan ServerCpuTime() => _server?.CpuTime() ?? TimeSpan.Zero;

    public async Task<IPeerProducer> CreateProducerAsync(int index, CancellationToken cancellationToken)
    {
        var connection = await ConnectAsync(cancellationToken);
        var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true,
            publisherConfirmationTrackingEnabled: true), cancellationToken);
        return new Producer(connection, channel);
    }

    public async Task<IPeerConsumer> CreateConsumerAsync(int index, CancellationToken cancellationToken)
    {
        var connection = await ConnectAsync(cancellationToken);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken);
        await channel.BasicQosAsync(0, 2_000, false, cancellationToken);
        return new Consumer(connection, channel);
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
            await _server.DisposeAsync();
    }

    private sealed class Producer(IConnection connection, IChannel channel) : IPeerProducer
    {
        private static readonly BasicProperties Persistent = new() { Persistent = true };

        public async Task PublishAsync(IReadOnlyList<byte[]> messages, CancellationToken cancellationToken)
        {
            var confirms = new Task[messages.Count];
            for (int i = 0; i < messages.Count; i++)
                confirms[i] = channel.BasicPublishAsync("", Queue, false, Persistent, messages[i], cancellationToken).AsTask();
            await Task.WhenAll(confirms);
        }

        public async ValueTask DisposeAsync()
        {
            await channel.DisposeAsync();
            await connection.DisposeAsync();
        }
    }

    private sealed class Consumer(IConnection connection, IChannel channel) : IPeerConsumer
    {
        public async Task RunAsync(Action<ReadOnlySpan<byte>> handle, CancellationToken cancellationToken)
        {
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += async (_, delivery) =>
            {
                handle(delivery.Body.Span);
                await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false);
            };
            await channel.BasicConsumeAsync(Queue, autoAck: false, consumer, cancellationToken);
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            catch (OperationCanceledException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await channel.DisposeAsync();
            await connection.DisposeAsync();
        }
    }
}
