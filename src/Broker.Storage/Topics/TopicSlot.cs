using Broker.Storage.Errors;
using Microsoft.Extensions.Logging;

namespace Broker.Storage.Topics;

/// <summary>
/// A topic that exists (its folder and metadata are on disk) and is opened on first use: an open topic keeps its
/// log pages in memory, so topics nobody touches (most dead-letter topics, idle queues after a restart) cost none.
/// Once open it stays open until it is deleted or the store closes, or until its storage fails: a failed topic (a
/// full disk, a device error) is closed and reopened from its last commit on a later use, at most once a second,
/// so a broker recovers from a full disk without a restart once space is freed.
/// </summary>
internal sealed partial class TopicSlot(string name, string directory, TopicLayout layout, ILogger logger)
{
    private static readonly TimeSpan ReopenInterval = TimeSpan.FromSeconds(1);

    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile Topic? _topic;
    private bool _retired;
    private long? _lastReopen;
    // The last open that failed (a full disk can fail a recovery's repair): given back, not retried, until a second passed.
    private Exception? _openFailure;

    public string Name => name;

    public string Directory => directory;

    /// <summary>Page and segment sizes of the topic's logs, fixed when it was created.</summary>
    public TopicLayout Layout => layout;

    /// <summary>The topic's retention (from its metadata); changed under the store's admin lock once the metadata is durable.</summary>
    public TopicRetention Retention { get; set; } = TopicRetention.Unlimited;

    /// <summary>The topic's properties (from its metadata); replaced, as its retention, once the metadata is durable.</summary>
    public IReadOnlyDictionary<string, string> Properties { get; set; } = TopicProperties.Empty;

    /// <summary>The topic when it is open, else null.</summary>
    public Topic? OpenTopic => _topic;

    /// <summary>
    /// The open topic, opening it (recovering its logs) on first use, and reopening it when its storage failed and
    /// the last reopening is a second ago or more (until then the failed topic answers with its failure).
    /// </summary>
    public async ValueTask<Topic> GetAsync(Func<TopicSlot, CancellationToken, Task<Topic>> open, CancellationToken cancellationToken)
    {
        if (_topic is { } topic && (!topic.StorageFailed || !ReopenDue()))
            return topic;
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_retired)
                Throw.TopicNotFound(name);
            if (_topic is { StorageFailed: true } failed && ReopenDue())
            {
                _lastReopen = Environment.TickCount64;
                Events.Reopening(logger, name, failed.StorageFailure?.Message ?? "unknown");
                _topic = null;
                await failed.DisposeAsync().ConfigureAwait(false);
            }
            if (_topic is not null)
                return _topic;
            if (_openFailure is { } failure && !ReopenDue())
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            try
            {
                _topic = await open(this, cancellationToken).ConfigureAwait(false);
                _openFailure = null;
                return _topic;
            }
            catch (Exception error) when (error is not OperationCanceledException)
            {
                _openFailure = error;
                _lastReopen = Environment.TickCount64;
                throw;
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private bool ReopenDue() => _lastReopen is not long last || Environment.TickCount64 - last >= (long)ReopenInterval.TotalMilliseconds;
    /// <summary>
    /// Closes the topic if it is open and refuses to open it again (the topic is being deleted, or the store is
    /// closing); returns once no opening is in progress.
    /// </summary>
    public async Task RetireAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            _retired = true;
            if (_topic is { } topic)
                await topic.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 3102, Level = LogLevel.Warning,
            Message = "Topic {Topic}: its storage failed ({Reason}); closing it and reopening it from its last commit")]
        public static partial void Reopening(ILogger logger, string topic, string reason);
    }
}
