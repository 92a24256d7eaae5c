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
/// broker, with its offset, or fails with its error. A background loop takes what the buffer holds, waits up to
/// <see cref="BrokerClientOptions.Linger"/> for more, and publishes it per topic in batches of at most
/// <see cref="BrokerClientOptions.MaxBatchMessages"/> messages / <see cref="BrokerClientOptions.MaxBatchBytes"/> bytes,
/// many batches in flight at once. <see cref="FlushAsync"/> waits for everything sent before it.</para>
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

    private readonly BrokerSettings _settings;
    private readonly JsonSerializerOptions _json;
    private readonly ILogger _logger;
    private readonly ListenerSet _listeners;
    private readonly ResiliencePipeline _retry;
    private readonly SemaphoreSlim _room;
    private readonly SemaphoreSlim _batchSlots = new(MaxBatchesInFlight, MaxBatchesInFlight);
    private readonly Channel<PendingMessage> _queue = Channel.CreateUnbounded<PendingMessage>(new UnboundedChannelOptions { SingleReader = true });
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
        _retry = TransientRetry.Create(settings.RetryBackoff, (error, delay) => Log.Retrying(_logger, error.Message, delay.TotalMilliseconds));
        _pump = Task.Run(PumpAsync);
    }

    /// <summary>Batches the broker acknowledged so far (for tests and logging).</summary>
    internal long BatchesPublished => Interlocked.Read(ref _batchesPublished);

    /// <summary>
    /// Buffers <paramref name="value"/> as JSON for <paramref name="topic"/> (a <c>byte[]</c> or <c>ReadOnlyMemory&lt;byte&gt;</c>
    /// goes as it is); waits only while the buffer is full. The returned task completes once the message is durable.
    /// </summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, CancellationToken cancellationToken = default) =>
        Send(topic, Serialize(value, null), cancellationToken);

    /// <summary>As <see cref="SendAsync{T}(string, T, CancellationToken)"/>, serialized with a source-generated <paramref name="typeInfo"/>.</summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken = default) =>
        Send(topic, Serialize(value, typeInfo), cancellationToken);

    /// <summary>
    /// As <see cref="SendAsync{T}(string, T, CancellationToken)"/>, with a key, headers, or a scheduled delivery time
    /// (Celery's countdown or eta) from <paramref name="options"/>.
    /// </summary>
    public ValueTask<Task<PublishedMessage>> SendAsync<T>(string topic, T value, SendOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var message = Serialize(value, null);
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
        Send(topic, message.ToProto(), cancellationToken);

    private ValueTask<Task<PublishedMessage>> Send(string topic, Message message, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        ObjectDisposedException.ThrowIf(_closed, this);
        // Taken now, in the caller's context: the batch goes out later from the producer's own loop.
        TraceContext.Inject(message);
        var pending = new PendingMessage(topic, message);
        if (_room.Wait(0))
            return new ValueTask<Task<PublishedMessage>>(Enqueue(pending));
        return WaitForRoomAsync(pending, cancellationToken);
    }

    private async ValueTask<Task<PublishedMessage>> WaitForRoomAsync(PendingMessage pending, CancellationToken cancellationToken)
    {
        await _room.WaitAsync(cancellationToken).ConfigureAwait(false);
        return Enqueue(pending);
    }

    private Task<PublishedMessage> Enqueue(PendingMessage pending)
    {
        if (_closed || !_queue.Writer.TryWrite(pending))
        {
            _room.Release();
            throw new ObjectDisposedException(nameof(BrokerProducer));
        }
        return pending.Durable.Task;
    }

    /// <summary>
    /// Returns once every message sent before this call is durable or has failed; throws
    /// <see cref="PublishFailedException"/> listing the messages that failed since the previous flush.
    /// </summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        var marker = PendingMessage.FlushMarker();
        if (!_queue.Writer.TryWrite(marker))
            throw new ObjectDisposedException(nameof(BrokerProducer));
        await marker.FlushDone!.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        List<PublishFailure> failures;
        lock (_lock)
        {
            failures = [.. _failures];
            _failures.Clear();
        }
        if (failures.Count > 0)
            throw new PublishFailedException(failures);
    }

    /// <summary>The message for a value: bytes copied (the caller may reuse its buffer), JSON wrapped (this producer owns it).</summary>
    private Message Serialize<T>(T value, JsonTypeInfo<T>? typeInfo) => new()
    {
        Payload = value switch
        {
            byte[] bytes => ByteString.CopyFrom(bytes),
            ReadOnlyMemory<byte> memory => ByteString.CopyFrom(memory.Span),
            _ when typeInfo is not null => UnsafeByteOperations.UnsafeWrap(JsonSerializer.SerializeToUtf8Bytes(value, typeInfo)),
            _ => UnsafeByteOperations.UnsafeWrap(JsonSerializer.SerializeToUtf8Bytes(value, _json)),
        },
    };

    /// <summary>The one reader of the buffer: lingers, cuts batches, and starts each (up to <see cref="MaxBatchesInFlight"/>).</summary>
    private async Task PumpAsync()
    {
        var reader = _queue.Reader;
        var taken = new List<PendingMessage>();
        var flushes = new List<PendingMessage>();
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            await TakeAsync(reader, taken, flushes).ConfigureAwait(false);
            foreach (var batch in Batches(taken))
            {
                await _batchSlots.WaitAsync().ConfigureAwait(false);
                var publishing = PublishBatchAsync(batch);
                lock (_lock)
                    _batchesInFlight.Add(publishing);
                _ = publishing.ContinueWith(done => { lock (_lock) _batchesInFlight.Remove(done); }, TaskScheduler.Default);
            }
            foreach (var flush in flushes)
            {
                Task[] before;
                lock (_lock)
                    before = [.. _batchesInFlight];
                _ = Task.WhenAll(before).ContinueWith(_ => flush.FlushDone!.TrySetResult(), TaskScheduler.Default);
            }
            taken.Clear();
            flushes.Clear();
        }
    }

    /// <summary>Takes what the buffer holds, waiting up to the linger for a full batch unless a flush asks for speed.</summary>
    private async Task TakeAsync(ChannelReader<PendingMessage> reader, List<PendingMessage> taken, List<PendingMessage> flushes)
    {
        int limit = _settings.MaxBatchMessages * 16;
        long lingerEnds = Environment.TickCount64 + (long)_settings.Linger.TotalMilliseconds;
        while (taken.Count < limit)
        {
            if (reader.TryRead(out var item))
            {
                if (item.FlushDone is not null)
                    flushes.Add(item);
                else
                    taken.Add(item);
                continue;
            }
            long remaining = lingerEnds - Environment.TickCount64;
            if (flushes.Count > 0 || _closed || taken.Count >= _settings.MaxBatchMessages || remaining <= 0)
                return;
            var more = reader.WaitToReadAsync().AsTask();
            if (await Task.WhenAny(more, Task.Delay((int)remaining)).ConfigureAwait(false) != more || !await more.ConfigureAwait(false))
                return;
        }
    }

    private IEnumerable<List<PendingMessage>> Batches(List<PendingMessage> taken)
    {
        foreach (var topic in taken.GroupBy(m => m.Topic, StringComparer.Ordinal))
        {
            var batch = new List<PendingMessage>();
            long bytes = 0;
            foreach (var message in topic)
            {
                if (batch.Count > 0 && (batch.Count >= _settings.MaxBatchMessages || bytes + message.Size > _settings.MaxBatchBytes))
                {
                    yield return batch;
                    batch = [];
                    bytes = 0;
                }
                batch.Add(message);
                bytes += message.Size;
            }
            yield return batch;
        }
    }

    private async Task PublishBatchAsync(List<PendingMessage> batch)
    {
        string topic = batch[0].Topic;
        var request = new PublishRequest { Topic = topic };
        foreach (var message in batch)
            request.Messages.Add(message.Message);
        try
        {
            var response = await _retry.ExecuteAsync(_settings.DeliveryTimeout, (this, request),
                static (state, cancellationToken) => state.Item1.PublishOnceAsync(state.request, cancellationToken), CancellationToken.None).ConfigureAwait(false);
            Interlocked.Increment(ref _batchesPublished);
            var result = PublishResult.FromProto(response);
            for (int i = 0; i < batch.Count; i++)
                batch[i].Durable.TrySetResult(new PublishedMessage(topic, result.OffsetOf(i), result.IsDuplicate(i)));
        }
        catch (Exception error)
        {
            Log.BatchFailed(_logger, batch.Count, topic, error.Message);
            lock (_lock)
            {
                foreach (var message in batch)
                    _failures.Enqueue(new PublishFailure(topic, message.Message.Payload.Memory, error));
            }
            foreach (var message in batch)
                message.Durable.TrySetException(error);
        }
        finally
        {
            _room.Release(batch.Count);
            _batchSlots.Release();
        }
    }

    private ValueTask<PublishResponse> PublishOnceAsync(PublishRequest request, CancellationToken cancellationToken) =>
        CurrentSession().PublishAsync(request, cancellationToken);

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
            fresh = _session = new PublishStreamSession(new Publisher.PublisherClient(channel), index);
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
        _closed = true;
        _queue.Writer.TryComplete();
        await _pump.ConfigureAwait(false);
        // A send that raced with the flush above was still taken by the pump: wait for its batch before closing the stream.
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

        [LoggerMessage(EventId = 4003, Level = LogLevel.Warning, Message = "Publish of {Count} message(s) to {Topic} failed: {Error}")]
        public static partial void BatchFailed(ILogger logger, int count, string topic, string error);
    }
}
