using Broker.Protocol.V1;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Client;

/// <summary>
/// A hosted consumer (<c>services.AddBrokerWorker&lt;THandler&gt;(...)</c>): one <see cref="BrokerConsumer"/> feeding
/// between <see cref="BrokerWorkerOptions.MinHandlers"/> and <see cref="BrokerWorkerOptions.MaxHandlers"/> concurrent
/// handler loops. Every <see cref="BrokerWorkerOptions.ScaleInterval"/> it reads the group's backlog (DescribeTopic) and
/// aims at ceil(backlog / <see cref="BrokerWorkerOptions.BacklogPerHandler"/>) handlers: it grows at once and shrinks by
/// one a round, a handler leaving only between messages. Each resize is logged at information level (event 4201),
/// every other change at debug level (4206); each raises
/// <see cref="StateChanged"/>.
/// <para>Shutdown: no new work is taken; running handlers finish (acked or nacked as usual) until the host's shutdown
/// token fires, then they are cancelled and their messages released; everything received and not handed out is
/// released; then the stream closes.</para>
/// </summary>
/// <typeparam name="THandler">The application's handler, resolved in a new DI scope per message.</typeparam>
public sealed partial class BrokerWorkerPool<THandler> : IHostedService, IAsyncDisposable
    where THandler : class, IBrokerMessageHandler
{
    private readonly BrokerWorkerOptions _options;
    private readonly BrokerSettings _settings;
    private readonly IServiceScopeFactory _scopes;
    private readonly ILogger _logger;
    private readonly ILoggerFactory? _loggerFactory;
    private readonly List<(Task Loop, CancellationTokenSource Leave)> _loops = [];
    private readonly List<Task> _leaving = [];
    private readonly CancellationTokenSource _stopTaking = new();
    private readonly CancellationTokenSource _abortHandlers = new();
    private readonly Lock _lock = new();
    private BrokerConsumer? _consumer;
    private ListenerSet? _admin;
    private Task _scaling = Task.CompletedTask;
    private int _busy;
    private long _handled;
    private long _backlog = -1;
    private bool _stopping;
    private BrokerWorkerState _lastReported = new(0, 0, -1, 0, false);

    /// <summary>A pool with <paramref name="options"/>; <see cref="StartAsync"/> starts it (the host does).</summary>
    public BrokerWorkerPool(BrokerWorkerOptions options, IServiceScopeFactory scopes, ILoggerFactory? loggerFactory = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MinHandlers, 0);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxHandlers, Math.Max(1, options.MinHandlers));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BacklogPerHandler, 1);
        _options = options;
        var client = options.Client.Clone();
        // Prefetch no more than the pool can work on, so a busy pool does not hoard what other workers could take.
        client.MaxInFlight ??= options.MaxHandlers;
        _settings = BrokerSettings.Resolve(client);
        _scopes = scopes;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory?.CreateLogger<BrokerWorkerPool<THandler>>() ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>Raised (on a pool thread) whenever <see cref="State"/> changes.</summary>
    public event Action<BrokerWorkerState>? StateChanged;

    /// <summary>What the pool is doing now.</summary>
    public BrokerWorkerState State
    {
        get
        {
            lock (_lock)
                return new BrokerWorkerState(_loops.Count, Volatile.Read(ref _busy), Interlocked.Read(ref _backlog), Interlocked.Read(ref _handled), _stopping);
        }
    }

    /// <summary>Starts <see cref="BrokerWorkerOptions.MinHandlers"/> handlers (at least one) and the scaling loop; returns at once.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        // Registered twice for the same handler (two AddBrokerWorker calls), the host starts the one pool twice.
        if (_consumer is not null)
            return Task.CompletedTask;
        _consumer = new BrokerConsumer(_settings, null, _loggerFactory?.CreateLogger<BrokerConsumer>());
        _admin = new ListenerSet(_settings.Listeners, _settings.ApiKey, _settings.TrustedRoots);
        Resize(Math.Max(1, _options.MinHandlers));
        _scaling = Task.Run(ScaleAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task ScaleAsync()
    {
        using var timer = new PeriodicTimer(_options.ScaleInterval);
        try
        {
            do
            {
                if (await ReadBacklogAsync().ConfigureAwait(false) is not { } backlog)
                    continue;
                Interlocked.Exchange(ref _backlog, backlog);
                int wanted = (int)Math.Clamp((backlog + _options.BacklogPerHandler - 1) / _options.BacklogPerHandler,
                    Math.Max(1, _options.MinHandlers), _options.MaxHandlers);
                int running;
                lock (_lock)
                    running = _loops.Count;
                Resize(wanted >= running ? wanted : running - 1);
                ReportIfChanged();
            }
            while (await timer.WaitForNextTickAsync(_stopTaking.Token).ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
        catch (Grpc.Core.RpcException error) when (error.StatusCode == Grpc.Core.StatusCode.Cancelled && _stopTaking.IsCancellationRequested)
        {
            // Stopping while a backlog read was in flight: gRPC reports its cancellation as a status, not as a cancellation.
        }
    }

    private async Task<long?> ReadBacklogAsync()
    {
        var (index, channel) = _admin!.Current;
        try
        {
            var description = await new Admin.AdminClient(channel).DescribeTopicAsync(new DescribeTopicRequest { Name = _consumer!.Topic },
                cancellationToken: _stopTaking.Token).ConfigureAwait(false);
            var group = description.Groups.FirstOrDefault(g => g.Name == _consumer.Group);
            return group is null ? (long)(description.NextOffset - description.FirstOffset) : (long)group.Backlog;
        }
        catch (Grpc.Core.RpcException error) when (!_stopTaking.IsCancellationRequested)
        {
            // The topic may not exist yet (its first publish creates it), or this listener is down: keep the size.
            if (error.StatusCode == Grpc.Core.StatusCode.Unavailable)
                _admin.MoveOnFrom(index);
            Log.BacklogUnknown(_logger, _consumer!.Topic, error.Status.Detail);
            return null;
        }
    }

    private void Resize(int wanted)
    {
        lock (_lock)
        {
            if (_stopping)
                return;
            while (_loops.Count < wanted)
            {
                var leave = CancellationTokenSource.CreateLinkedTokenSource(_stopTaking.Token);
                _loops.Add((Task.Run(() => HandleLoopAsync(leave.Token)), leave));
            }
            while (_loops.Count > wanted)
            {
                // The newest leaves first, after its current message; it is awaited at shutdown.
                var (loop, leave) = _loops[^1];
                _loops.RemoveAt(_loops.Count - 1);
                _leaving.Add(loop);
                leave.Cancel();
            }
        }
        ReportIfChanged();
    }

    private async Task HandleLoopAsync(CancellationToken leave)
    {
        while (!leave.IsCancellationRequested)
        {
            BrokerMessage message;
            try
            {
                message = await _consumer!.ReceiveAsync(leave).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception error) when (error is BrokerClientException or Polly.Timeout.TimeoutRejectedException)
            {
                // The consumer already retried transient failures up to its reconnect timeout: pause before the next round.
                Log.ReceiveFailed(_logger, _consumer!.Topic, error.Message);
                try
                {
                    await Task.Delay(_options.RetryDelay, leave).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            await HandleAsync(message).ConfigureAwait(false);
        }
    }

    private async Task HandleAsync(BrokerMessage message)
    {
        Interlocked.Increment(ref _busy);
        ReportIfChanged();
        try
        {
            await using var scope = _scopes.CreateAsyncScope();
            await scope.ServiceProvider.GetRequiredService<THandler>().HandleAsync(message, _abortHandlers.Token).ConfigureAwait(false);
            if (!message.IsSettled)
                await message.AckAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_abortHandlers.IsCancellationRequested)
        {
            await SettleQuietlyAsync(message, m => m.ReleaseAsync()).ConfigureAwait(false);
        }
        catch (Exception error) when (error is BrokerClientException or SettleNotConfirmedException)
        {
            Log.SettleFailed(_logger, message.ToString(), error.Message);
        }
        catch (Exception error)
        {
            Log.HandlerFailed(_logger, error, message.ToString());
            await SettleQuietlyAsync(message, m => m.NackAsync(_options.RetryDelay, error.Message)).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Increment(ref _handled);
            Interlocked.Decrement(ref _busy);
            ReportIfChanged();
        }
    }

    private async Task SettleQuietlyAsync(BrokerMessage message, Func<BrokerMessage, Task> settle)
    {
        if (message.IsSettled)
            return;
        try
        {
            await settle(message).ConfigureAwait(false);
        }
        catch (Exception error) when (error is BrokerClientException or SettleNotConfirmedException or InvalidOperationException)
        {
            Log.SettleFailed(_logger, message.ToString(), error.Message);
        }
    }

    private void ReportIfChanged()
    {
        var state = State;
        BrokerWorkerState previous;
        lock (_lock)
        {
            if (state == _lastReported)
                return;
            previous = _lastReported;
            _lastReported = state;
        }
        // Information when the pool resizes or stops; every message's busy and handled counts only at debug level.
        if (state.Handlers != previous.Handlers || state.Stopping != previous.Stopping)
            Log.Resized(_logger, _consumer?.Topic ?? "", _consumer?.Group ?? "", state.Handlers, state.Busy, state.Backlog, state.Handled, state.Stopping);
        else
            Log.Progress(_logger, _consumer?.Topic ?? "", _consumer?.Group ?? "", state.Handlers, state.Busy, state.Backlog, state.Handled);
        StateChanged?.Invoke(state);
    }

    /// <summary>Stops taking work, lets running handlers finish until <paramref name="cancellationToken"/> fires (then cancels them), releases the rest.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Task[] loops;
        lock (_lock)
        {
            if (_stopping)
                return;
            _stopping = true;
            loops = [.. _loops.Select(l => l.Loop), .. _leaving];
        }
        ReportIfChanged();
        _stopTaking.Cancel();
        await using (cancellationToken.Register(_abortHandlers.Cancel).ConfigureAwait(false))
        {
            await Task.WhenAll(loops.Append(_scaling)).ConfigureAwait(false);
        }
        if (_consumer is not null)
            await _consumer.DisposeAsync().ConfigureAwait(false);
        lock (_lock)
            _loops.Clear();
        ReportIfChanged();
    }

    /// <summary>Stops (without waiting for handlers past their cancellation) and frees the connections.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        _admin?.Dispose();
        _stopTaking.Dispose();
        _abortHandlers.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4201, Level = LogLevel.Information,
            Message = "Worker pool {Topic}/{Group}: {Handlers} handler(s), {Busy} busy, backlog {Backlog}, {Handled} handled, stopping {Stopping}")]
        public static partial void Resized(ILogger logger, string topic, string group, int handlers, int busy, long backlog, long handled, bool stopping);

        [LoggerMessage(EventId = 4206, Level = LogLevel.Debug, Message = "Worker pool {Topic}/{Group}: {Handlers} handler(s), {Busy} busy, backlog {Backlog}, {Handled} handled")]
        public static partial void Progress(ILogger logger, string topic, string group, int handlers, int busy, long backlog, long handled);

        [LoggerMessage(EventId = 4202, Level = LogLevel.Warning, Message = "Handler failed on {Message}; nacked to retry later")]
        public static partial void HandlerFailed(ILogger logger, Exception error, string message);

        [LoggerMessage(EventId = 4203, Level = LogLevel.Warning, Message = "Settling {Message} failed: {Error}")]
        public static partial void SettleFailed(ILogger logger, string message, string error);

        [LoggerMessage(EventId = 4204, Level = LogLevel.Warning, Message = "Receiving from {Topic} failed: {Error}; trying again")]
        public static partial void ReceiveFailed(ILogger logger, string topic, string error);

        [LoggerMessage(EventId = 4205, Level = LogLevel.Debug, Message = "Backlog of {Topic} unknown: {Error}")]
        public static partial void BacklogUnknown(ILogger logger, string topic, string error);
    }
}
