namespace Broker.Perf.Peers;

/// <summary>
/// One system under comparison: a server this runner starts on loopback (a fresh data folder per run) and stops, the
/// queue it prepares, and clients in its own idiom for the shared workload (<see cref="Workload"/>). Every system is
/// driven the same way: producers publish batches and wait for the server's confirmation, consumers compete in one
/// group and acknowledge every message.
/// </summary>
internal interface IPeerSystem : IAsyncDisposable
{
    /// <summary>The name in the report.</summary>
    string Name { get; }

    /// <summary>What "confirmed" means for this system (whether the data was fsynced before the answer).</summary>
    string Durability { get; }

    /// <summary>Starts the server and creates the queue and its consumer group.</summary>
    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>The server's CPU time so far (its process and its children).</summary>
    TimeSpan ServerCpuTime();

    /// <summary>
    /// After the warm-up, everything of it consumed: lets go of what the system keeps of consumed messages only until
    /// someone trims it (Redis keeps a stream's acknowledged entries in memory), so every measured run starts alike.
    /// </summary>
    Task AfterWarmupAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    Task<IPeerProducer> CreateProducerAsync(int index, CancellationToken cancellationToken);

    Task<IPeerConsumer> CreateConsumerAsync(int index, CancellationToken cancellationToken);
}

internal interface IPeerProducer : IAsyncDisposable
{
    /// <summary>Publishes the messages; completes once the server confirmed all of them.</summary>
    Task PublishAsync(IReadOnlyList<byte[]> messages, CancellationToken cancellationToken);
}

internal interface IPeerConsumer : IAsyncDisposable
{
    /// <summary>
    /// Receives until cancelled, calling <paramref name="handle"/> for each message and then acknowledging it (batched
    /// as the system allows).
    /// </summary>
    Task RunAsync(Action<ReadOnlySpan<byte>> handle, CancellationToken cancellationToken);
}
