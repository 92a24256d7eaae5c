using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// A topic that exists (its folder and metadata are on disk) and is opened on first use: an open topic keeps its
/// log pages in memory, so topics nobody touches (most dead-letter topics, idle queues after a restart) cost none.
/// Once open it stays open until it is deleted or the store closes.
/// </summary>
internal sealed class TopicSlot(string name, string directory, TopicLayout layout)
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile Topic? _topic;
    private bool _retired;

    public string Name => name;

    public string Directory => directory;

    /// <summary>Page and segment sizes of the topic's logs, fixed when it was created.</summary>
    public TopicLayout Layout => layout;

    /// <summary>The topic when it is open, else null.</summary>
    public Topic? OpenTopic => _topic;

    /// <summary>The open topic, opening it (recovering its logs) on first use.</summary>
    public async ValueTask<Topic> GetAsync(Func<TopicSlot, CancellationToken, Task<Topic>> open, CancellationToken cancellationToken)
    {
        if (_topic is { } topic)
            return topic;
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_retired)
                Throw.TopicNotFound(name);
            return _topic ??= await open(this, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

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
}
