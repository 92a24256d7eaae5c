using System.Globalization;
using StackExchange.Redis;

namespace Broker.Perf.Peers.Systems;

/// <summary>
/// Redis Streams (Debian's redis-server) with an append-only file: <c>appendfsync always</c> (an XADD is answered after
/// its fsync: durable, the fair peer) or <c>everysec</c> (fsynced once a second: not durable, the fast reference).
/// Producers pipeline one XADD per message; consumers XREADGROUP with BLOCK on a connection of their own (a blocking
/// read would hold up anything else on a multiplexed connection) and XACK each batch on another.
/// </summary>
internal sealed class RedisStreams(bool fsyncAlways) : IPeerSystem
{
    private const string Stream = "peer";
    private const string Group = "workers";
    private ServerProcess? _server;

    public string Name => fsyncAlways ? "redis-always" : "redis-everysec";

    public string Durability => fsyncAlways ? "AOF fsync before the reply (appendfsync always)" : "AOF fsynced once a second: not durable";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        string data = ServerProcess.NewDataDirectory(Name);
        int port = ServerProcess.FreePort();
        _server = await ServerProcess.StartAsync("redis-server",
            ["--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--dir", data, "--appendonly", "yes",
             "--appendfsync", fsyncAlways ? "always" : "everysec", "--save", "", "--protected-mode", "no", "--daemonize", "no",
             // No automatic AOF rewrite: after the million-message warm-up (a GiB in the stream) one would fork and
             // rewrite it in the middle of the measured run, which no other system pays for here.
             "--auto-aof-rewrite-percentage", "0"],
            data, port, null, TimeSpan.FromSeconds(20), cancellationToken);
        await using var admin = await ConnectAsync();
        await admin.GetDatabase().ExecuteAsync("XGROUP", "CREATE", Stream, Group, "$", "MKSTREAM");
    }

    public TimeSpan ServerCpuTime() => _server?.CpuTime() ?? TimeSpan.Zero;

    /// <summary>
    /// Trims the stream: the warm-up's million entries (a GiB) stay in memory after their XACK otherwise, and the
    /// measured run then paid for a process twice that size (W2 at 62–66k msg/s and 12.5–13.4 server CPU-s per million in
    /// two of three rounds, against 112k and 6.8 in the third).
    /// </summary>
    public async Task AfterWarmupAsync(CancellationToken cancellationToken)
    {
        await using var admin = await ConnectAsync();
        await admin.GetDatabase().ExecuteAsync("XTRIM", Stream, "MAXLEN", "0");
    }

    private Task<ConnectionMultiplexer> ConnectAsync() =>
        ConnectionMultiplexer.ConnectAsync(new ConfigurationOptions
        {
            EndPoints = { { "127.0.0.1", _server!.Port } },
            AbortOnConnectFail = true,
            SyncTimeout = 60_000,
            AsyncTimeout = 60_000,
        });

    public async Task<IPeerProducer> CreateProducerAsync(int index, CancellationToken cancellationToken) => new Producer(await ConnectAsync());

    public async Task<IPeerConsumer> CreateConsumerAsync(int index, CancellationToken cancellationToken) =>
        new Consumer(await ConnectAsync(), await ConnectAsync(), $"c{index}");

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
            await _server.DisposeAsync();
    }

    private sealed class Producer(ConnectionMultiplexer connection) : IPeerProducer
    {
        private static readonly NameValueEntry[] NoFields = [];

        public async Task PublishAsync(IReadOnlyList<byte[]> messages, CancellationToken cancellationToken)
        {
            var database = connection.GetDatabase();
            var batch = database.CreateBatch();
            var adds = new Task[messages.Count];
            for (int i = 0; i < messages.Count; i++)
                adds[i] = batch.StreamAddAsync(Stream, "d", messages[i]);
            batch.Execute();
            await Task.WhenAll(adds);
        }

        public ValueTask DisposeAsync() => connection.DisposeAsync();
    }

    private sealed class Consumer(ConnectionMultiplexer reader, ConnectionMultiplexer acker, string name) : IPeerConsumer
    {
        public async Task RunAsync(Action<ReadOnlySpan<byte>> handle, CancellationToken cancellationToken)
        {
            var read = reader.GetDatabase();
            var ack = acker.GetDatabase();
            var ids = new List<RedisValue>(100);
            while (!cancellationToken.IsCancellationRequested)
            {
                // [[stream, [[id, [field, value]], ...]]], or null when BLOCK ran out.
                var answer = await read.ExecuteAsync("XREADGROUP", "GROUP", Group, name, "COUNT", 100, "BLOCK", 100, "STREAMS", Stream, ">");
                if (answer.IsNull)
                    continue;
                foreach (var stream in (RedisResult[])answer!)
                {
                    foreach (var entry in (RedisResult[])((RedisResult[])stream!)[1]!)
                    {
                        var parts = (RedisResult[])entry!;
                        var fields = (RedisResult[])parts[1]!;
                        handle(((byte[])fields[1]!).AsSpan());
                        ids.Add((RedisValue)parts[0]);
                    }
                }
                if (ids.Count > 0)
                {
                    _ = ack.StreamAcknowledgeAsync(Stream, Group, ids.ToArray());
                    ids.Clear();
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await reader.DisposeAsync();
            await acker.DisposeAsync();
        }
    }
}
