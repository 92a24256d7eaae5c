using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using Broker.Protocol.V1;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;

namespace Broker.Client;

/// <summary>
/// Publishes messages in batches over one PublishStream, without making the caller wait for the network.
/// <para><c>SendAsync</c> waits only for room in the producer's bounded buffer (<see cref="BrokerClientOptions.BufferMessages"/>
/// messages not yet durable: backpressure) and returns a task that completes once that message is durable on the
/// broker, with its offset, or fails with its error. The message is encoded at once into its topic's open
/// <see cref="ProducerBatch"/>; a background loop publishes each batch when it holds
/// <see cref="BrokerClientOptions.MaxBatchMessages"/> messages / <see cref="BrokerClientOptions.MaxBatchBytes"/> bytes or
/// <see cref="BrokerClientOptions.Linger"/> after its first message, many batches in flight at once.
/// <see cref="FlushAsync"/> waits for everything sent before it.</para>
/// <para>Retries (docs/csharp-client.md): a batch that fails with UNAVAILABLE (the broker is down, restarting or
/// shutting down, a listener refuses connections, the stream broke) is sent again with exponential backoff, on a new
/// stream to the next listener, until <see cref="BrokerClientOptions.DeliveryTimeout"/>; other errors fail its messages
/// at once. A retry can store a batch twice in exactly one case: the stream broke (connection lost, broker killed)
/// after the batch was written and before its answer arrived; the broker may have made it durable. A batch answered with
/// an error, or refused by a broker shutting down (error 1201), was not stored, and its retry cannot duplicate it.
/// Batches are sent in order on one stream; a retried batch may land after batches sent later.</para>
/// Thread-safe.
/// </summary>
public sealed partial class BrokerProducer : IAsyncDisposable
{
    /// <summary>Batches awaiting their answer at once (the broker pipelines up to 256 per stream).</summary>
    private const int MaxBatchesInFlight = 64;

    /// <summary>The longest single wait for a linger's end (Task.Delay refuses more than about 49 days); the pump then waits again.</summary>
    private static readonly TimeSpan LongestTimerWait = TimeSpan.FromDays(1);

    private readonly BrokerSettings _settings;
    private readonly JsonSerializerOptions _json;
    private readonly ILogger _logger;
    private readonly ListenerSet _listeners;
    private readonly ResiliencePipeline _retry;
    private readonly SemaphoreSlim _room;
    private readonly long _lingerTicks;
    private readonly SemaphoreSlim _batchSlots = new(MaxBatchesInFlight, MaxBatchesInFlight);
    // What the pump acts on, in order: sealed batches, flushes, and notices that a batch was opened (its linger runs).
    private readonly Channel<PumpItem> _queue = Channel.CreateUnbounded<PumpItem>(new UnboundedChannelOptions { SingleReader = true });
    // Per topic, the batch being filled; under _lock.
    private readonly Dictionary<string, TopicBatches> _topics = new(StringComparer.Ordinal);
    // The topics with an open batch, under _lock: what the pump's linger pass looks at, however many topics were used.
    private readonly List<TopicBatches> _open = [];
    private readonly HashSet<Task> _batchesInFlight = [];
    private readonly Queue<PublishFailure> _failures = new();
    private readonly Lock _lock = new();
    private readonly Task _pump;
    private PublishStreamSession? _session;
    private volatile bool _closed;
    private long _batchesPublished;

    /// <summary>
    /// A producer for the brokers in <paramref name="options"/> (gaps filled from <c>QUEUE_PLATFORM_*</c>; throws
    /// <see cref="BrokerConfigurationException"/> when no listener is given). <paramref name="json"/> serializes values
    /// (set its <c>TypeInfoResolver</c> to a source-generated context for trimming); default <see cref="JsonSerializerOptions.Web"/>.
    /// </summary>
    public BrokerProducer(BrokerClientOptions? options = null, JsonSerializerOptions? json = null, ILogger<BrokerProducer>? logger = null)
        : this(BrokerSettings.Resolve(options), json, logger)
    {
    }

    internal BrokerProducer(BrokerSettings settings, JsonSerializerOptions? json, ILogger? logger)
    {
        _settings = settings;
        _json = json ?? JsonSerializerOptions.Web;
        _logger = logger ?? NullLogger.Instance;
        _listeners = new ListenerSet(settings.Listeners, settings.ApiKey, settings.TrustedRoots);
        _room = new SemaphoreSlim(settings.BufferMessages, settings.BufferMessages);
        // In Stopwatch ticks, not Environment.TickCount64: that clock moves in kernel ticks of 4 ms here (PreciseTimer).
        _lingerTicks = PreciseTimer.StopwatchTicks(settings.Linger);
        _retry = TransientRetry.Create(settings.RetryBackoff, (error, delay) => Log.Retrying(_logger, error.Message, delay.TotalMilliseconds));
        _pump = Task.Run(PumpAsync);
        // The loop ending on an exception is a bug that leaves sends and flushes waiting: never silently.
        _pump.ContinueWith(stopped => Log.PumpFailed(_logger, stopped.Exception!.GetBaseException()), CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
    }

    /// <summary>Batches the broker acknowledged so far (for tests and logging).</summary>
    internal long BatchesPublished => Interlocked.Read(ref _batchesPublished);

    /// <summary>
    /// Buffers <paramref name="value"/> as JSON for <paramref name="topic"/> (a <c>byte[]</c> or <c>ReadOnlyMemory&lt;byte&gt;</c>
    /// goes as it is); waits only while the buffer is full. The returned task completes once the message is durable.
    /// </summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, CancellationToken cancellationToken = default) =>
        SendPlain(topic, default, PayloadOf(value, null), cancellationToken);

    /// <summary>As <see cref="SendAsync{T}(string, T, CancellationToken)"/>, serialized with a source-generated <paramref name="typeInfo"/>.</summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken = default) =>
        SendPlain(topic, default, PayloadOf(value, typeInfo), cancellationToken);

    /// <summary>
    /// As <see cref="SendAsync{T}(string, T, CancellationToken)"/>, with a key, headers, or a scheduled delivery time
    /// (Celery's countdown or eta) from <paramref name="options"/>.
    /// </summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, SendOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var message = new Message { Payload = UnsafeByteOperations.UnsafeWrap(PayloadOf(value, null)) };
        if (options.Key is { } key)
            message.Key = ByteString.CopyFromUtf8(key);
        if (options.Headers is not null)
        {
            foreach (var header in options.Headers)
                message.Headers.Add(header.Key, header.Value);
        }
        OutgoingMessage.ApplySchedule(message, options.Delay, options.DeliverAt);
        message.MessageId = options.MessageId ?? "";
        message.Priority = (uint)Math.Clamp(options.Priority, 0, int.MaxValue);
        return Send(topic, message, cancellationToken);
    }

    /// <summary>Buffers a message with its own key and headers; waits only while the buffer is full. The task completes once it is durable.</summary>
    public ValueTask<Task<PublishedMessage>> SendAsync(string topic, OutgoingMessage message, CancellationToken cancellationToken = default) =>
        message.IsPlain
            ? SendPlain(topic, message.Key, message.Payload, cancellationToken)
            : Send(topic, message.ToProto(copyBytes: false), cancellationToken);

    /// <summary>
    /// A message of a payload and perhaps a key: encoded without a protobuf <see cref="Message"/> when it can go into its
    /// batch at once and no trace is current (a trace adds headers); otherwise as any other message.
    /// </summary>
    private ValueTask<Task<PublishedMessage>> SendPlain(string topic, ReadOnlyMemory<byte> key, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ObjectDisposedException.ThrowIf(_closed, this);
        if (Activity.Current is not null || !_room.Wait(0))
            return Send(topic, new Message { Key = UnsafeByteOperations.UnsafeWrap(key), Payload = UnsafeByteOperations.UnsafeWrap(payload) }, cancellationToken);
        return new ValueTask<Task<PublishedMessage>>(Append(topic, new OutgoingBytes(key.Span, payload.Span)));
    }

    /// <summary>
    /// Encodes <paramref name="message"/> into its topic's batch at once when the buffer has room; its payload and key may
    /// still be the caller's memory, which is read only here. A send that must wait for room copies them first: the
    /// caller may reuse its buffer as soon as this returns.
    /// </summary>
    private ValueTask<Task<PublishedMessage>> Send(string topic, Message message, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ObjectDisposedException.ThrowIf(_closed, this);
        // Taken now, in the caller's context: the batch goes out later from the producer's own loop.
        TraceContext.Inject(message);
        if (_room.Wait(0))
            return new ValueTask<Task<PublishedMessage>>(Append(topic, new OutgoingBytes(message)));
        message.Payload = ByteString.CopyFrom(message.Payload.Span);
        message.Key = ByteString.CopyFrom(message.Key.Span);
        return WaitForRoomAsync(topic, message, cancellationToken);
    }

    private async ValueTask<Task<PublishedMessage>> WaitForRoomAsync(string topic, Message message, CancellationToken cancellationToken)
    {
        await _room.WaitAsync(cancellationToken).ConfigureAwait(false);
        return AppendMessage(topic, message);
    }

    private Task<PublishedMessage> AppendMessage(string topic, Message message) => Append(topic, new OutgoingBytes(message));

    /// <summary>Encodes a message (its room already taken) into its topic's open batch, sealing that batch when full.</summary>
    private Task<PublishedMessage> Append(string topic, in OutgoingBytes message)
    {
        int encoded = ProducerBatch.EncodedSize(message.Size);
        lock (_lock)
        {
            if (_closed)
            {
                _room.Release();
                throw new ObjectDisposedException(nameof(BrokerProducer));
            }
            if (!_topics.TryGetValue(topic, out var batches))
                _topics[topic] = batches = new TopicBatches();
            if (batches.Open is { } full && !full.Fits(encoded, _settings.MaxBatchMessages, _settings.MaxBatchBytes))
                SealLocked(batches);
            if (batches.Open is not { } batch)
            {
                batch = batches.Open = new ProducerBatch(topic, batches.LastBatchBytes, Stopwatch.GetTimestamp() + _lingerTicks);
                batches.OpenIndex = _open.Count;
                _open.Add(batches);
                _queue.Writer.TryWrite(PumpItem.Opened);
            }
            Task<PublishedMessage> durable;
            try
            {
                durable = batch.Append(message);
            }
            catch
            {
                // Not in the batch (its bytes past the batch's end are ignored): its room is free again.
                _room.Release();
                throw;
            }
            if (batch.IsFull(_settings.MaxBatchMessages, _settings.MaxBatchBytes))
                SealLocked(batches);
            return durable;
        }
    }

    /// <summary>Hands a topic's open batch to the pump (under the lock, so batches of a topic reach it in order).</summary>
    private void SealLocked(TopicBatches batches)
    {
        var batch = batches.Open!;
        batches.Open = null;
        // Out of the open list: the last one takes its place.
        var moved = _open[^1];
        _open[batches.OpenIndex] = moved;
        moved.OpenIndex = batches.OpenIndex;
        _open.RemoveAt(_open.Count - 1);
        if (batch.Count == 0)
        {
            // Opened for a message whose encoding failed: nothing to publish.
            batch.ReturnBuffer();
            return;
        }
        batches.LastBatchBytes = batch.Body.Length;
        _queue.Writer.TryWrite(new PumpItem(batch, null));
    }

    /// <summary>Seals every open batch whose linger is over (all of them when <paramref name="all"/>); returns the earliest linger end of the rest.</summary>
    private long? SealLingeredLocked(bool all)
    {
        long now = Stopwatch.GetTimestamp();
        long? next = null;
        // Backwards: sealing moves the last entry into the sealed one's place, and that one was seen already.
        for (int i = _open.Count - 1; i >= 0; i--)
        {
            var batches = _open[i];
            var open = batches.Open!;
            if (all || open.LingerEnds <= now)
                SealLocked(batches);
            else if (next is null || open.LingerEnds < next)
                next = open.LingerEnds;
        }
        return next;
    }

    /// <summary>
    /// Returns once every message sent before this call is durable or has failed; throws
    /// <see cref="PublishFailedException"/> listing the messages that failed since the previous flush.
    /// </summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            // Sealed first, under the lock: the pump starts every batch ahead of the flush before it reads the flush.
            SealLingeredLocked(all: true);
            if (!_queue.Writer.TryWrite(new PumpItem(null, done)))
                throw new ObjectDisposedException(nameof(BrokerProducer));
        }
        await done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        List<PublishFailure> failures;
        lock (_lock)
        {
            failures = [.. _failures];
            _failures.Clear();
        }
        if (failures.Count > 0)
            throw new PublishFailedException(failures);
    }

    /// <summary>A value's payload: bytes as they are (<see cref="Send"/> and <see cref="SendPlain"/> read or copy them before returning), anything else as JSON.</summary>
    private ReadOnlyMemory<byte> PayloadOf<T>(T value, JsonTypeInfo<T>? typeInfo) => value switch
    {
        byte[] bytes => bytes,
        ReadOnlyMemory<byte> memory => memory,
        _ when typeInfo is not null => JsonSerializer.SerializeToUtf8Bytes(value, typeInfo),
        _ => JsonSerializer.SerializeToUtf8Bytes(value, _json),
    };

    /// <summary>
    /// The one reader of the queue: starts each sealed batch (up to <see cref="MaxBatchesInFlight"/> at once), seals open
    /// batches when their linger is over, and completes flushes once every batch ahead of them is done.
    /// </summary>
    private async Task PumpAsync()
    {
        var reader = _queue.Reader;
        Task<bool>? more = null;
        while (true)
        {
            while (reader.TryRead(out var item))
            {
                if (item.Batch is { } batch)
                {
                    await StartAsync(batch).ConfigureAwait(false);
                    // A busy topic can keep this queue from emptying for long: quiet topics' batches still go when their linger ends.
                    lock (_lock)
                        SealLingeredLocked(all: false);
                }
                else if (item.Flush is { } flush)
                    CompleteAfterBatchesInFlight(flush);
            }
            long? lingerEnds;
            lock (_lock)
                lingerEnds = SealLingeredLocked(all: false);
            if (reader.TryPeek(out _))
                continue;
            more ??= reader.WaitToReadAsync().AsTask();
            if (lingerEnds is long at && Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), at) is { Ticks: > 0 } wait)
                await Task.WhenAny(more, PreciseTimer.Delay(wait < LongestTimerWait ? wait : LongestTimerWait)).ConfigureAwait(false);
            else if (lingerEnds is null)
                await more.ConfigureAwait(false);
            if (more.IsCompleted)
            {
                // False once the queue is completed (disposing) and empty: everything was sealed and started before.
                if (!await more.ConfigureAwait(false))
                    return;
                more = null;
            }
        }
    }

    private async Task StartAsync(ProducerBatch batch)
    {
        await _batchSlots.WaitAsync().ConfigureAwait(false);
        var publishing = PublishBatchAsync(batch);
        lock (_lock)
            _batchesInFlight.Add(publishing);
        _ = publishing.ContinueWith(done => { lock (_lock) _batchesInFlight.Remove(done); }, TaskScheduler.Default);
    }

    private void CompleteAfterBatchesInFlight(TaskCompletionSource flush)
    {
        Task[] before;
        lock (_lock)
            before = [.. _batchesInFlight];
        _ = Task.WhenAll(before).ContinueWith(_ => flush.TrySetResult(), TaskScheduler.Default);
    }

    private async Task PublishBatchAsync(ProducerBatch batch)
    {
        PublishResult? published = null;
        Exception? error = null;
        try
        {
            var response = await _retry.ExecuteAsync(_settings.DeliveryTimeout, (this, batch),
                static (state, cancellationToken) => state.Item1.CurrentSession().PublishAsync(state.batch.Body, cancellationToken), CancellationToken.None).ConfigureAwait(false);
            published = PublishResult.FromProto(response);
        }
        catch (Exception failed)
        {
            error = failed;
            Log.BatchFailed(_logger, batch.Count, batch.Topic, failed.Message);
            IReadOnlyList<PublishFailure> failures;
            try
            {
                failures = batch.Failures(failed);
            }
            catch (InvalidProtocolBufferException)
            {
                // Cannot happen (the producer wrote those bytes), and must not keep the room and the slot below from
                // being given back: the messages' tasks still fail.
                failures = [];
            }
            lock (_lock)
            {
                foreach (var failure in failures)
                    _failures.Enqueue(failure);
            }
        }
        // The retries are over: no write of the batch's bytes can follow.
        int count = batch.Count;
        batch.ReturnBuffer();
        _room.Release(count);
        _batchSlots.Release();
        // Last: the messages' continuations may run inline here, and application code that blocks in one must not
        // keep the room and the batch slot from the sends behind it.
        if (published is { } result)
        {
            Interlocked.Increment(ref _batchesPublished);
            batch.Complete(result);
        }
        else
            batch.Fail(error!);
    }

    /// <summary>The open stream; after one broke, a new stream on the next listener.</summary>
    private PublishStreamSession CurrentSession()
    {
        PublishStreamSession? broken;
        PublishStreamSession fresh;
        lock (_lock)
        {
            if (_session is { Broken: false } open)
                return open;
            broken = _session;
            if (broken is not null)
                _listeners.MoveOnFrom(broken.ListenerIndex);
            var (index, channel) = _listeners.Current;
            fresh = _session = new PublishStreamSession(channel, index);
            if (broken is not null)
                Log.NewStream(_logger, _listeners.AddressOf(index).ToString());
        }
        if (broken is not null)
            _ = broken.DisposeAsync().AsTask();
        return fresh;
    }

    /// <summary>Flushes (failures stay in the messages' tasks), then closes the stream and the connections.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_closed)
            return;
        try
        {
            await FlushAsync().ConfigureAwait(false);
        }
        catch (PublishFailedException)
        {
            // Reported through each message's task; disposing must not throw.
        }
        lock (_lock)
        {
            // A send that raced with the flush above is in an open batch: sealed for the pump before the queue ends.
            _closed = true;
            SealLingeredLocked(all: true);
            _queue.Writer.TryComplete();
        }
        await _pump.ConfigureAwait(false);
        // Wait for the last batches before closing the stream.
        Task[] lastBatches;
        PublishStreamSession? session;
        lock (_lock)
            lastBatches = [.. _batchesInFlight];
        await Task.WhenAll(lastBatches).ConfigureAwait(false);
        lock (_lock)
            session = _session;
        if (session is not null)
            await session.DisposeAsync().ConfigureAwait(false);
        _listeners.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "Publish failed transiently ({Error}); retrying in {DelayMs} ms")]
        public static partial void Retrying(ILogger logger, string error, double delayMs);

        [LoggerMessage(EventId = 4002, Level = LogLevel.Information, Message = "Publishing on a new stream to {Listener}")]
        public static partial void NewStream(ILogger logger, string listener);

        [LoggerMessage(EventId = 4004, Level = LogLevel.Critical, Message = "The producer's publishing loop stopped; sends and flushes will not complete")]
        public static partial void PumpFailed(ILogger logger, Exception error);

        [LoggerMessage(EventId = 4003, Level = LogLevel.Warning, Message = "Publish of {Count} message(s) to {Topic} failed: {Error}")]
        public static partial void BatchFailed(ILogger logger, int count, string topic, string error);
    }

    /// <summary>A topic's batch being filled, and the size of its previous one (the next buffer is rented at that size).</summary>
    private sealed class TopicBatches
    {
        public ProducerBatch? Open { get; set; }

        /// <summary>Where it is in the producer's list of open batches, while <see cref="Open"/> is set.</summary>
        public int OpenIndex { get; set; }

        public int LastBatchBytes { get; set; }
    }

    /// <summary>One thing for the pump: a sealed batch to publish, a flush to complete, or neither (a batch opened: its linger runs).</summary>
    private readonly record struct PumpItem(ProducerBatch? Batch, TaskCompletionSource? Flush)
    {
        public static PumpItem Opened => default;
    }
}
