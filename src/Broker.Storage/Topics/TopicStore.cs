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
    private readonly CancellationTokenSource _stopping = new();
    private Task _maintenance = Task.CompletedTask;

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
                var topic = await Topic.OpenAsync(metadata.Name, directory, options, store._time, store.GetOrCreateTopicAsync, cancellationToken).ConfigureAwait(false);
                store._topics[metadata.Name] = topic;
            }
        }
        catch
        {
            await store.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        store._maintenance = Task.Run(store.MaintainPeriodicallyAsync);
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
            await CreateLockedAsync(name, cancellationToken).ConfigureAwait(false);
            return true;
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>The topic, created when missing (dead-letter topics come into being this way).</summary>
    public async Task<Topic> GetOrCreateTopicAsync(string name, CancellationToken cancellationToken)
    {
        if (_topics.TryGetValue(name, out var existing))
            return existing;
        EntityName.EnsureValid(name, "topic");
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return _topics.TryGetValue(name, out existing) ? existing : await CreateLockedAsync(name, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _adminLock.Release();
        }
    }

    private async Task<Topic> CreateLockedAsync(string name, CancellationToken cancellationToken)
    {
        string directory = Path.Combine(_options.TopicsDirectory, name);
        try
        {
            if (Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);
            Directory.CreateDirectory(directory);
        }
        catch (IOException error)
        {
            throw new BrokerException(BrokerErrorCode.StorageFailure, $"cannot create topic '{name}': {error.Message}", error);
        }
        var topic = await Topic.OpenAsync(name, directory, _options, _time, GetOrCreateTopicAsync, cancellationToken).ConfigureAwait(false);
        try
        {
            new TopicMetadata(TopicMetadata.CurrentFormatVersion, name, _time.GetUtcNow().ToUnixTimeMilliseconds()).WriteDurably(directory);
            TopicMetadata.FlushDirectory(_options.TopicsDirectory);
        }
        catch (IOException error)
        {
            await topic.DisposeAsync().ConfigureAwait(false);
            throw new BrokerException(BrokerErrorCode.StorageFailure, $"cannot create topic '{name}': {error.Message}", error);
        }
        _topics[name] = topic;
        return topic;
    }

    /// <summary>Runs <see cref="Topic.MaintainAsync"/> on every topic once (the periodic loop does this every interval).</summary>
    public async Task MaintainAllAsync(CancellationToken cancellationToken)
    {
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            foreach (var topic in _topics.Values)
            {
                try
                {
                    await topic.MaintainAsync().ConfigureAwait(false);
                }
                catch (BrokerException)
                {
                    // A failed topic stays failed; its calls report the failure.
                }
            }
        }
        finally
        {
            _adminLock.Release();
        }
    }

    private async Task MaintainPeriodicallyAsync()
    {
        using var timer = new PeriodicTimer(_options.MaintenanceInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token).ConfigureAwait(false))
                await MaintainAllAsync(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
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
        _stopping.Cancel();
        await _maintenance.ConfigureAwait(false);
        foreach (var topic in _topics.Values)
            await topic.DisposeAsync().ConfigureAwait(false);
        _topics.Clear();
    }
}
