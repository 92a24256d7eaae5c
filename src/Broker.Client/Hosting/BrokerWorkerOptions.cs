namespace Broker.Client;

/// <summary>
/// How a hosted <see cref="BrokerWorkerPool{THandler}"/> consumes and scales. Bindable from the same configuration
/// section as its <see cref="Client"/> settings (<c>AddBrokerWorker&lt;T&gt;(section)</c> binds both).
/// </summary>
public sealed class BrokerWorkerOptions
{
    /// <summary>Where and what to consume (listeners, topic, group, visibility timeout, ...); gaps come from <c>QUEUE_PLATFORM_*</c>.</summary>
    public BrokerClientOptions Client { get; set; } = new();

    /// <summary>Handlers running even when there is nothing to do. Default 1.</summary>
    public int MinHandlers { get; set; } = 1;

    /// <summary>Most handlers running at once. Default 8.</summary>
    public int MaxHandlers { get; set; } = 8;

    /// <summary>
    /// The load ratio: the pool aims at this many messages of the group's backlog per handler, so it runs
    /// ceil(backlog / this) handlers, within <see cref="MinHandlers"/> and <see cref="MaxHandlers"/>. Default 100.
    /// </summary>
    public int BacklogPerHandler { get; set; } = 100;

    /// <summary>How often the pool reads the group's backlog and resizes. It grows at once and shrinks by one handler a time. Default 5 s.</summary>
    public TimeSpan ScaleInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>When a handler throws, its message is nacked to come back after this delay (a dead letter after the group's max deliveries). Default 10 s.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(10);
}

/// <summary>What a worker pool is doing: logged when it resizes or stops, and readable at <see cref="BrokerWorkerPool{THandler}.State"/>.</summary>
/// <param name="Handlers">Handler loops running.</param>
/// <param name="Busy">Handlers working on a message now.</param>
/// <param name="Backlog">The group's backlog at the last reading (messages not yet acknowledged), -1 before the first.</param>
/// <param name="Handled">Messages handled since start (acked, nacked or settled by the handler).</param>
/// <param name="Stopping">True once shutdown began: no new work is taken.</param>
public sealed record BrokerWorkerState(int Handlers, int Busy, long Backlog, long Handled, bool Stopping);
