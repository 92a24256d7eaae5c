using Broker.Storage.Logs;

namespace Broker.Server.Hosting;

/// <summary>
/// The broker's shutdown before Kestrel stops listening (docs/semantics.md, "Shutdown"), in phases:
/// <list type="number">
/// <item>no new deliveries: every consumer session stops fetching and tells its consumer (<see cref="Draining"/>);</item>
/// <item>new calls are refused with ShuttingDown (1201) while the listener still accepts, so clients get a status;</item>
/// <item>consumers get <see cref="Grace"/> to settle what they hold; each is then told its stream is done, and the
/// stream ends with 1201 once the consumer half-closed (so it has read every answer before the connection closes);</item>
/// <item>calls still in flight (publishes waiting for their commit, admin calls) are answered.</item>
/// </list>
/// Only then does <see cref="BrokerHost"/> stop Kestrel (nothing left to abort) and close the storage. Each phase logs
/// one information line with a stable event id.
/// </summary>
internal sealed partial class ShutdownDrain(BrokerOptions options, ILogger<ShutdownDrain> logger) : IDisposable
{
    /// <summary>How long calls other than consume streams get to finish once the consumers are gone.</summary>
    public static readonly TimeSpan CallsTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long a consume stream waits for its consumer's half-close after telling it the stream is done (drained). A
    /// client that knows the notice half-closes as soon as it has read it; this bounds one that does not.
    /// </summary>
    public static readonly TimeSpan HalfCloseAllowance = TimeSpan.FromSeconds(5);

    // A session ends itself once the grace and the half-close wait are over; this covers one slow to flush its last answers.
    public static readonly TimeSpan ConsumerFlushAllowance = TimeSpan.FromSeconds(10);

    private readonly CancellationTokenSource _draining = new();
    private readonly AsyncSignal _callEnded = new();
    private int _begun;
    private int _calls;
    private int _consumers;
    private int _consumersCut;

    /// <summary>Cancelled when the drain begins: consumer sessions stop delivering, new calls are refused.</summary>
    public CancellationToken Draining => _draining.Token;

    /// <summary>How long consumers get to settle what they hold.</summary>
    public TimeSpan Grace => options.ShutdownGrace;

    /// <summary>Counts a call in; false (and not counted) once the drain has begun.</summary>
    public bool TryEnterCall()
    {
        Interlocked.Increment(ref _calls);
        if (!_draining.IsCancellationRequested)
            return true;
        ExitCall();
        return false;
    }

    /// <summary>Counts a call out.</summary>
    public void ExitCall()
    {
        Interlocked.Decrement(ref _calls);
        // Only a drain waits for calls to end: no allocation per call while the broker runs.
        if (_draining.IsCancellationRequested)
            _callEnded.Set();
    }

    /// <summary>A consume stream's session started.</summary>
    public void ConsumerStarted() => Interlocked.Increment(ref _consumers);

    /// <summary>A consume stream's session ended; <paramref name="cutAtGraceEnd"/> when its consumer still held deliveries.</summary>
    public void ConsumerEnded(bool cutAtGraceEnd)
    {
        if (cutAtGraceEnd)
            Interlocked.Increment(ref _consumersCut);
        Interlocked.Decrement(ref _consumers);
        if (_draining.IsCancellationRequested)
            _callEnded.Set();
    }

    /// <summary>
    /// Phases 1 and 2, both at once: stop deliveries and refuse new calls. Idempotent; called from
    /// IHostApplicationLifetime.ApplicationStopping as well as from <see cref="DrainAsync"/>.
    /// </summary>
    public void Begin()
    {
        if (Interlocked.Exchange(ref _begun, 1) != 0)
            return;
        _draining.Cancel();
        Log.DeliveriesStopped(logger, Volatile.Read(ref _consumers));
        Log.RefusingCalls(logger);
    }

    /// <summary>Phases 1 to 4; returns once no call is left (or, for calls that keep running, after their bounds).</summary>
    public async Task DrainAsync()
    {
        Begin();
        Log.GraceStarted(logger, (long)Grace.TotalMilliseconds, Volatile.Read(ref _consumers));
        await WaitUntilAsync(() => Volatile.Read(ref _consumers) == 0, Grace + HalfCloseAllowance + ConsumerFlushAllowance).ConfigureAwait(false);
        Log.ConsumersEnded(logger, Volatile.Read(ref _consumersCut), Volatile.Read(ref _consumers));
        await WaitUntilAsync(() => Volatile.Read(ref _calls) == 0, CallsTimeout).ConfigureAwait(false);
        Log.CallsAnswered(logger, Volatile.Read(ref _calls));
    }

    /// <summary>
    /// The last phase, logged once the storage is closed: the container disposes this after the store (it is resolved
    /// first, see <see cref="BrokerHost"/>) and before the logging.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _begun) != 0)
            Log.StorageClosed(logger);
    }

    private async Task WaitUntilAsync(Func<bool> done, TimeSpan bound)
    {
        using var timeout = new CancellationTokenSource(bound);
        while (true)
        {
            var ended = _callEnded.WaitTask;
            if (done())
                return;
            try
            {
                await ended.WaitAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Past its bound: the caller goes on; the log line after it says how many were left.
                return;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2301, Level = LogLevel.Information, Message = "Shutdown: no new deliveries; {Consumers} consumer streams are told to settle and release what they hold")]
        public static partial void DeliveriesStopped(ILogger logger, int consumers);

        [LoggerMessage(EventId = 2302, Level = LogLevel.Information, Message = "Shutdown: new calls are refused with UNAVAILABLE (ShuttingDown, 1201)")]
        public static partial void RefusingCalls(ILogger logger);

        [LoggerMessage(EventId = 2303, Level = LogLevel.Information, Message = "Shutdown: consumers have {GraceMs} ms to settle what they hold ({Consumers} streams open)")]
        public static partial void GraceStarted(ILogger logger, long graceMs, int consumers);

        [LoggerMessage(EventId = 2304, Level = LogLevel.Information, Message = "Shutdown: consumer streams ended with ShuttingDown (1201); {Cut} still held deliveries when they ended, {Left} did not end")]
        public static partial void ConsumersEnded(ILogger logger, int cut, int left);

        [LoggerMessage(EventId = 2305, Level = LogLevel.Information, Message = "Shutdown: in-flight calls answered ({Left} did not finish); closing the storage")]
        public static partial void CallsAnswered(ILogger logger, int left);

        [LoggerMessage(EventId = 2306, Level = LogLevel.Information, Message = "Shutdown complete: storage closed, everything appended is committed")]
        public static partial void StorageClosed(ILogger logger);
    }
}
