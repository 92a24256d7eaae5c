using System.Collections.Concurrent;
using Broker.Storage.Errors;
using Broker.Storage.Files;
using Broker.Storage.Logs;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Storage.Topics;

/// <summary>
/// All topics of one data folder: finds them at start, opens each on first use, creates and deletes them. Topic
/// creation is durable when <see cref="CreateTopicAsync"/> returns; a deleted topic's folder is first renamed out
/// of <c>topics/</c> (atomic), then removed, so a crash mid-delete never resurrects half a topic.
/// <para>Memory: each open topic keeps its log pages in memory (<see cref="StorageOptions.TopicPageSizeBits"/>, and
/// smaller pages for topics beyond <see cref="StorageOptions.TopicPageBudgetMiB"/> and for dead-letter topics, see
/// <see cref="TopicLayout.ForNewTopic"/>); a topic is opened (its logs recovered) the first time a call needs it, so
/// start-up reads only metadata and untouched topics cost no memory.</para>
/// </summary>
public sealed partial class TopicStore : IAsyncDisposable
{
    private readonly StorageOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, TopicSlot> _topics = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _adminLock = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private readonly StoreDisk _disk;
    private readonly ILogger _logger;
    private Task _maintenance = Task.CompletedTask;

    private TopicStore(StorageOptions options, TimeProvider time, ILoggerFactory loggerFactory)
    {
        _options = options;
        _time = time;
        LoggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<TopicStore>();
        _disk = new StoreDisk(options.MaxConcurrentCommits, loggerFactory.CreateLogger<DiskWriter>());
    }

    /// <summary>Where storage reports what it repairs at recovery and what fails in the background.</summary>
    internal ILoggerFactory LoggerFactory { get; }

    /// <summary>The options this store runs with.</summary>
    public StorageOptions Options => _options;

    /// <summary>Finds every topic under the data folder; each is recovered to its last commit when first used.</summary>
    public static Task<TopicStore> OpenAsync(StorageOptions options, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(Open(options, time));
    }

    /// <summary>
    /// Finds every topic under the data folder; each is recovered to its last commit when first used. Recovery
    /// repairs and background failures are reported through <paramref name="loggerFactory"/>.
    /// </summary>
    public static TopicStore Open(StorageOptions options, TimeProvider? time = null, ILoggerFactory? loggerFactory = null)
    {
        options.Validate();
        var store = new TopicStore(options, time ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
        try
        {
            DurableFolder.Create(options.TopicsDirectory);
            if (Directory.Exists(options.TrashDirectory))
                Directory.Delete(options.TrashDirectory, recursive: true);
            foreach (string directory in Directory.EnumerateDirectories(options.TopicsDirectory))
            {
                var metadata = TopicMetadata.TryRead(directory);
                if (metadata is null)
                {
                    // A creation that crashed before its metadata landed: not a topic.
                    Directory.Delete(directory, recursive: true);
                    continue;
                }
                store._topics[metadata.Name] = new TopicSlot(metadata.Name, directory, metadata.Layout ?? TopicLayout.Legacy(options), store._logger)
                {
                    Retention = metadata.Retention ?? TopicRetention.Unlimited,
                    Properties = metadata.Properties is { } properties ? TopicProperties.Sorted(properties) : TopicProperties.Empty,
                };
            }
        }
        catch
        {
            // No topic is open yet: only the disk-writer threads need stopping.
            store._disk.Dispose();
            throw;
        }
        store._maintenance = Task.Run(store.MaintainPeriodicallyAsync);
        return store;
    }

    /// <summary>
    /// The topic, opened if this is its first use since start; <see cref="BrokerErrorCode.TopicNotFound"/>
    /// (<see cref="BrokerErrorCode.InvalidName"/> for a bad name) when it does not exist.
    /// </summary>
    public ValueTask<Topic> GetTopicAsync(string name, CancellationToken cancellationToken = default)
    {
        if (!_topics.TryGetValue(name, out var slot))
        {
            EntityName.EnsureValid(name, "topic");
            Throw.TopicNotFound(name);
        }
        return slot.GetAsync(OpenSlotAsync, cancellationToken);
    }

    /// <summary>Names of all topics, in ordinal order.</summary>
    public IReadOnlyList<string> ListTopics() => _topics.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>The topics open now (used since the start and not deleted), in no particular order.</summary>
    public IReadOnlyList<Topic> OpenTopics() => _topics.Values.Select(slot => slot.OpenTopic).OfType<Topic>().ToList();

    /// <summary>How many topics are open (their logs in memory).</summary>
    public int OpenTopicCount => _topics.Values.Count(slot => slot.OpenTopic is not null);

    /// <summary>
    /// Creates a topic durably, with <paramref name="retention"/> (none when null) and <paramref name="properties"/>
    /// (none when null), in one metadata file. Returns false when it existed and <paramref name="ifNotExists"/> is set;
    /// an existing topic keeps its own retention and properties.
    /// </summary>
    public async Task<bool> CreateTopicAsync(string name, bool ifNotExists, CancellationToken cancellationToken, TopicRetention? retention = null,
        IReadOnlyDictionary<string, string>? properties = null)
    {
        EntityName.EnsureValid(name, "topic");
        retention?.EnsureValid();
        properties = properties is { Count: > 0 } ? TopicProperties.Apply(TopicProperties.Empty, properties!) : null;
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_topics.ContainsKey(name))
            {
                if (ifNotExists)
                    return false;
                Throw.Broker(BrokerErrorCode.TopicAlreadyExists, $"topic '{name}' already exists");
            }
            CreateLocked(name, deadLetters: false, retention, properties);
            return true;
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>The dead-letter topic, opened, and created first (with dead-letter pages) when missing.</summary>
    internal async Task<Topic> GetOrCreateDeadLetterTopicAsync(string name, CancellationToken cancellationToken)
    {
        await EnsureDeadLetterTopicAsync(name, cancellationToken).ConfigureAwait(false);
        return await GetTopicAsync(name, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Creates a dead-letter topic durably when it is missing, without opening it.</summary>
    internal async Task EnsureDeadLetterTopicAsync(string name, CancellationToken cancellationToken)
    {
        if (_topics.ContainsKey(name))
            return;
        EntityName.EnsureValid(name, "dead-letter topic", EntityName.MaxDeadLetterLength);
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!_topics.ContainsKey(name))
                CreateLocked(name, deadLetters: true, new TopicRetention(MaxAgeMs: _options.DeadLetterMaxAgeMs));
        }
        finally
        {
            _adminLock.Release();
        }
    }

    private void CreateLocked(string name, bool deadLetters, TopicRetention? retention = null, IReadOnlyDictionary<string, string>? properties = null)
    {
        retention = retention is { IsUnlimited: false } ? retention : null;
        if (_stopping.IsCancellationRequested)
            Throw.Broker(BrokerErrorCode.ShuttingDown, "the broker is shutting down");
        string directory = Path.Combine(_options.TopicsDirectory, name);
        long pageMemoryInUse = _topics.Values.Sum(slot => slot.Layout.PageMemoryBytes);
        var layout = TopicLayout.ForNewTopic(_options, pageMemoryInUse, deadLetters);
        try
        {
            if (Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);
            Directory.CreateDirectory(directory);
            // The metadata file marks the topic as created; the logs are created when the topic is first opened.
            new TopicMetadata(TopicMetadata.CurrentFormatVersion, name, _time.GetUtcNow().ToUnixTimeMilliseconds(), layout, retention, properties)
                .WriteDurably(directory);
            DurableFolder.Flush(_options.TopicsDirectory);
        }
        catch (IOException error)
        {
            throw new BrokerException(BrokerErrorCode.StorageFailure, $"cannot create topic '{name}': {error.Message}", error);
        }
        _topics[name] = new TopicSlot(name, directory, layout, _logger)
        {
            Retention = retention ?? TopicRetention.Unlimited,
            Properties = properties ?? TopicProperties.Empty,
        };
    }

    /// <summary>
    /// Replaces a topic's retention, durably (its <c>topic.json</c> is rewritten: a temporary file fsynced, renamed into
    /// place, the folder fsynced) before it returns; maintenance applies it from its next round.
    /// </summary>
    public Task UpdateRetentionAsync(string name, TopicRetention retention, CancellationToken cancellationToken)
    {
        retention.EnsureValid();
        return RewriteMetadataAsync(name, metadata => metadata with { Retention = retention.IsUnlimited ? null : retention },
            slot => slot.Retention = retention, cancellationToken);
    }

    /// <summary>
    /// Applies <paramref name="changes"/> to a topic's properties (a null value removes one), durably as
    /// <see cref="UpdateRetentionAsync"/>, and returns them all; nothing changes when the result breaks a limit.
    /// </summary>
    public Task<IReadOnlyDictionary<string, string>> UpdatePropertiesAsync(string name, IReadOnlyDictionary<string, string?> changes,
        CancellationToken cancellationToken) =>
        UpdatePropertiesAsync(name, _ => changes, cancellationToken);

    /// <summary>
    /// As the other overload, with the changes made from the current properties under the store's admin lock, so a
    /// rule over all of them (SQS's 50 tags) holds against concurrent changes; an exception from
    /// <paramref name="changes"/> changes nothing.
    /// </summary>
    public async Task<IReadOnlyDictionary<string, string>> UpdatePropertiesAsync(string name,
        Func<IReadOnlyDictionary<string, string>, IReadOnlyDictionary<string, string?>> changes, CancellationToken cancellationToken)
    {
        IReadOnlyDictionary<string, string> updated = TopicProperties.Empty;
        await RewriteMetadataAsync(name, metadata =>
        {
            var current = metadata.Properties ?? TopicProperties.Empty;
            updated = TopicProperties.Apply(current, changes(current));
            return metadata with { Properties = updated.Count == 0 ? null : updated };
        }, slot => slot.Properties = updated, cancellationToken).ConfigureAwait(false);
        return updated;
    }

    /// <summary>The topic's properties; TopicNotFound when it does not exist.</summary>
    public IReadOnlyDictionary<string, string> PropertiesOf(string name)
    {
        if (!_topics.TryGetValue(name, out var slot))
        {
            EntityName.EnsureValid(name, "topic");
            Throw.TopicNotFound(name);
        }
        return slot.Properties;
    }

    /// <summary>
    /// Rewrites a topic's <c>topic.json</c> under the admin lock (a temporary file fsynced, renamed into place, the
    /// folder fsynced), then applies the change to the open slot: readers never see what a crash could take back.
    /// </summary>
    private async Task RewriteMetadataAsync(string name, Func<TopicMetadata, TopicMetadata> change, Action<TopicSlot> apply, CancellationToken cancellationToken)
    {
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!_topics.TryGetValue(name, out var slot))
            {
                EntityName.EnsureValid(name, "topic");
                Throw.TopicNotFound(name);
            }
            try
            {
                var metadata = TopicMetadata.TryRead(slot.Directory)
                    ?? throw new IOException($"the metadata of topic '{name}' is missing");
                change(metadata).WriteDurably(slot.Directory);
            }
            catch (IOException error)
            {
                throw new BrokerException(BrokerErrorCode.StorageFailure, $"cannot update topic '{name}': {error.Message}", error);
            }
            apply(slot);
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>The topic's retention (unlimited for a topic that does not exist).</summary>
    public TopicRetention RetentionOf(string name) => _topics.TryGetValue(name, out var slot) ? slot.Retention : TopicRetention.Unlimited;

    private async Task<Topic> OpenSlotAsync(TopicSlot slot, CancellationToken cancellationToken)
    {
        if (_stopping.IsCancellationRequested)
            Throw.Broker(BrokerErrorCode.ShuttingDown, "the broker is shutting down");
        try
        {
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            var topic = await Topic.OpenAsync(slot.Name, slot.Directory, slot.Layout, _options, _disk, _time, this, cancellationToken).ConfigureAwait(false);
            // Topics recover on first use, not at start, so this is where an operator sees what recovery found and its cost.
            var groups = topic.GroupNames;
            Events.TopicRecovered(_logger, slot.Name, (long)System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds, topic.NextOffset,
                groups.Count, string.Join(", ", groups));
            return topic;
        }
        catch (Exception error) when (error is IOException or InvalidDataException or FASTER.core.FasterException)
        {
            throw new BrokerException(BrokerErrorCode.StorageFailure, $"cannot open topic '{slot.Name}': {error.Message}", error);
        }
    }

    /// <summary>Runs <see cref="Topic.MaintainAsync"/> on every open topic once (the periodic loop does this every interval).</summary>
    public async Task MaintainAllAsync(CancellationToken cancellationToken)
    {
        await _adminLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            foreach (var slot in _topics.Values)
            {
                if (_stopping.IsCancellationRequested)
                    return;
                try
                {
                    // A topic with retention is opened for it (and stays open): a dead-letter topic nobody reads after a
                    // restart must still give its disk back.
                    var topic = slot.OpenTopic ?? (slot.Retention.IsUnlimited ? null : await slot.GetAsync(OpenSlotAsync, cancellationToken).ConfigureAwait(false));
                    if (topic is not null)
                        await topic.MaintainAsync().ConfigureAwait(false);
                }
                catch (Exception error) when (error is not OperationCanceledException)
                {
                    // A failed topic stays failed and its calls report the failure; the others are still maintained.
                    Events.MaintenanceFailed(_logger, slot.Name, error);
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
            if (!_topics.TryRemove(name, out var slot))
            {
                EntityName.EnsureValid(name, "topic");
                Throw.TopicNotFound(name);
            }
            await slot.RetireAsync().ConfigureAwait(false);
            Directory.CreateDirectory(_options.TrashDirectory);
            string trash = Path.Combine(_options.TrashDirectory, $"{name}-{Guid.NewGuid():N}");
            Directory.Move(slot.Directory, trash);
            DurableFolder.Flush(_options.TopicsDirectory);
            Directory.Delete(trash, recursive: true);
        }
        finally
        {
            _adminLock.Release();
        }
    }

    /// <summary>
    /// For crash tests: closes like a process kill, without the final commits, so that a store opened on the same
    /// folder afterwards recovers only what the two logs of each topic had committed, each on its own.
    /// </summary>
    internal ValueTask CrashAsync()
    {
        foreach (var slot in _topics.Values)
            slot.OpenTopic?.AbandonOnDispose();
        return DisposeAsync();
    }

    /// <summary>Closes every open topic, committing what was appended.</summary>
    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        await _maintenance.ConfigureAwait(false);
        // Under the admin lock: a delete in progress has taken its slot out of the map but may still be closing
        // its logs, whose last commits need the commit gate.
        await _adminLock.WaitAsync().ConfigureAwait(false);
        try
        {
            foreach (var slot in _topics.Values)
                await slot.RetireAsync().ConfigureAwait(false);
            _topics.Clear();
        }
        finally
        {
            _adminLock.Release();
            _disk.Dispose();
        }
    }

    private static partial class Events
    {
        [LoggerMessage(EventId = 3101, Level = LogLevel.Warning, Message = "Maintenance of topic {Topic} failed; it is tried again next interval")]
        public static partial void MaintenanceFailed(ILogger logger, string topic, Exception error);

        [LoggerMessage(EventId = 3014, Level = LogLevel.Information,
            Message = "Topic {Topic} recovered in {ElapsedMs} ms: next offset {NextOffset}, {GroupCount} group(s): {Groups}")]
        public static partial void TopicRecovered(ILogger logger, string topic, long elapsedMs, long nextOffset, int groupCount, string groups);
    }
}
