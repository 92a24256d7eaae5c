using System.Collections.Concurrent;
using Broker.Storage.Errors;

namespace Broker.Storage.Topics;

/// <summary>
/// All topics of one data folder: opens them at start, creates and deletes them. Topic creation is durable
/// when <see cref="CreateTopicAsync"/> returns; a deleted topic's folder is first renamed out of
/// <c>topics/</c> (atomic), then removed, so a crash mid-delete never resurrects half a topic.
/// </summary>
public sealed class TopicStore : IAsyncDisposable
{
    private readonly StorageOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Topic> _topics = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _adminLock = new(1, 1);

    private TopicStore(StorageOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
    }

    /// <summary>The options this store runs with.</summary>
    public StorageOptions Options => _options;

    /// <summary>Opens every topic under the data folder, recovering each to its last commit.</summary>
    public static async Task<TopicStore> OpenAsync(StorageOptions options, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var store = new TopicStore(options, time ?? TimeProvider.System);
        Directory.CreateDirectory(options.TopicsDirectory);
        if (Directory.Exists(options.TrashDirectory))
            Directory.Delete(options.TrashDirectory, recursive: true);
        try
        {
            foreach (string directory in Directory.EnumerateDirectories(options.TopicsDirectory))
            {
                var metadata = TopicMetadata.TryRead(directory);
                if (metadata is null)
                {
                    // A creation that crashed before its metadata landed: not a topic.
                    Directory.Delete(directory, recursive: true);
                    continue;
                }
                var topic = await Topic.OpenAsync(metadata.Name, directory, options, store._time, cancellationToken).ConfigureAwait(false);
                store._topics[metadata.Name] = topic;
            }
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return store;
    }

    /// <summary>The topic, or <see cref="BrokerErrorCode.TopicNotFound"/> (<see cref="BrokerErrorCode.InvalidName"/> for a bad name).</summary>
    public Topic GetTopic(string name)
    {
        if (_topics.TryGetValue(name, out var topic))
            return topic;
        EntityName.EnsureValid(name, "topic");
        Throw.TopicNotFound(name);
        return null!;
    }

    /// <summary>Names of all topics, in ordinal order.</summary>
    public IReadOnlyList<string> ListTopics() => _topics.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>Creates a topic durably. Returns false when it existed and <paramref name="ifNotExists"/> is set.</summary>
    public async Task<bool> CreateTopicAsync(string name, bool ifNotExists, CancellationToken cancellationToken)
    {
        EntityName.EnsureValid(name, "topic");
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_topics.ContainsKey(name))
            {
                if (ifNotExists)
                    return false;
                Throw.Broker(BrokerErrorCode.TopicAlreadyExists, $"topic '{name}' already exists");
            }
            string directory = Path.Combine(_options.TopicsDirectory, name);
            if (Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);
            Directory.CreateDirectory(directory);
            var topic = await Topic.OpenAsync(name, directory, _options, _time, cancellationToken).ConfigureAwait(false);
            new TopicMetadata(TopicMetadata.CurrentFormatVersion, name, _time.GetUtcNow().ToUnixTimeMilliseconds()).WriteDurably(directory);
            TopicMetadata.FlushDirectory(_options.TopicsDirectory);
            _topics[name] = topic;
            return true;
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>Deletes a topic with all its messages and groups; its consumers' streams end.</summary>
    public async Task DeleteTopicAsync(string name, CancellationToken cancellationToken)
    {
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var topic = GetTopic(name);
            _topics.TryRemove(name, out _);
            await topic.DisposeAsync().ConfigureAwait(false);
            Directory.CreateDirectory(_options.TrashDirectory);
            string trash = Path.Combine(_options.TrashDirectory, $"{name}-{Guid.NewGuid():N}");
            Directory.Move(topic.Directory, trash);
            TopicMetadata.FlushDirectory(_options.TopicsDirectory);
            Directory.Delete(trash, recursive: true);
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>Closes every topic, committing what was appended.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var topic in _topics.Values)
            await topic.DisposeAsync().ConfigureAwait(false);
        _topics.Clear();
    }
}
