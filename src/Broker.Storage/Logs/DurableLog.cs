using Broker.Storage.Errors;
using Broker.Storage.Files;
using FASTER.core;

namespace Broker.Storage.Logs;

/// <summary>Code that appends entries while holding the log's append lock.</summary>
internal delegate TResult AppendAction<TState, TResult>(TState state, ref AppendScope scope);

/// <summary>
/// What an <see cref="AppendAction{TState,TResult}"/> may do under the append lock: enqueue entries and update
/// the cookie, a 64-bit value stored with the next commit (a topic keeps its next offset there).
/// </summary>
internal ref struct AppendScope(FasterLog log, int maxEntryBytes)
{
    public long Cookie;

    /// <summary>Address right after the last entry enqueued so far: what a waiter for those entries waits for.</summary>
    public readonly long TailAddress => log.TailAddress;

    /// <summary>
    /// Enqueues one entry in memory (as fragments when it is larger than a page); returns its address. Durable only
    /// after the covering commit.
    /// </summary>
    public readonly long Enqueue<T>(T entry) where T : ILogEnqueueEntry =>
        entry.SerializedLength > maxEntryBytes
            ? EntryFragments.EnqueueFragmented(this, entry, maxEntryBytes)
            : EnqueueWhole(entry);

    /// <summary>Enqueues an entry that fits on a page.</summary>
    internal readonly long EnqueueWhole<T>(T entry) where T : ILogEnqueueEntry
    {
        // TryEnqueue fails only while the in-memory pages wait for a flush; the commit loop keeps flushing.
        long address;
        var spinner = new SpinWait();
        while (!log.TryEnqueue(entry, out address))
            spinner.SpinOnce();
        return address;
    }
}

/// <summary>
/// One FasterLog with group commit. Appends run under one lock, so a batch's entries are contiguous and no
/// commit ever splits a batch: a commit is issued under the same lock. A single commit loop commits whatever
/// was appended since the last commit and then completes every waiter it covered, so many concurrent appends
/// share one fsync.
/// <para>Durability: an entry is durable once <see cref="WaitForDurableAsync"/> for its end address completes.
/// After a crash the log recovers to the last completed commit; entries after it are gone, and none of them was
/// ever reported durable.</para>
/// <para>A device error (for example a full disk) fails the commit; the log then refuses all further appends with
/// <see cref="BrokerErrorCode.StorageFailure"/> until the broker is restarted on a repaired device.</para>
/// </summary>
internal sealed class DurableLog : IAsyncDisposable
{
    /// <summary>A commit metadata file is written every this many commits (and whenever the log was truncated).</summary>
    internal const int CommitMetadataEvery = 128;

    private readonly FasterLog _log;
    private readonly SegmentFileDevice _device;
    private readonly int _maxEntryBytes;
    private readonly int _pageSizeBits;
    private readonly int _segmentSizeBits;
    private readonly CommitGate _commitGate;
    private readonly Lock _appendLock = new();
    private readonly Lock _waiterLock = new();
    private readonly PriorityQueue<TaskCompletionSource, long> _waiters = new();
    // Truncations waiting for a commit that records them (under _appendLock; taken by the commit that covers them).
    private List<TaskCompletionSource>? _truncationWaiters;
    private readonly SemaphoreSlim _commitRequested = new(0);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly CancellationTokenSource _failed = new();
    private readonly Task _commitLoop;
    private long _cookie;
    private long _lastCommitTail;
    private long _lastCommitCookie;
    private volatile DurablePoint _durable;
    private volatile Exception? _failure;
    private bool _closed;
    private bool _finalCommitDone;
    private volatile bool _abandoned;

    private DurableLog(FasterLog log, SegmentFileDevice device, LogGeometry geometry, CommitGate commitGate, long recoveredCookie)
    {
        _pageSizeBits = geometry.PageSizeBits;
        _segmentSizeBits = geometry.SegmentSizeBits;
        _commitGate = commitGate;
        _log = log;
        _device = device;
        _maxEntryBytes = geometry.MaxEntryBytes;
        _cookie = recoveredCookie;
        _lastCommitCookie = recoveredCookie;
        _lastCommitTail = log.CommittedUntilAddress;
        _durable = new DurablePoint(log.CommittedUntilAddress, recoveredCookie);
        _commitLoop = Task.Run(CommitLoopAsync);
    }

    /// <summary>
    /// Opens (recovering to the last commit) or creates the log in <paramref name="directory"/>; its commits take a
    /// slot of the store's commit gate and its writes go through the store's disk writer.
    /// </summary>
    public static DurableLog Open(string directory, LogGeometry geometry, StoreDisk disk)
    {
        // FASTER creates its folders without flushing them into their parents; created here first, they survive a
        // power cut (a lost commits folder would make the log recover as empty). "log-commits" is the folder FASTER's
        // default naming scheme puts the commit metadata files in.
        string commits = Path.Combine(directory, "commits");
        DurableFolder.Create(Path.Combine(commits, "log-commits"));
        var device = new SegmentFileDevice(Path.Combine(directory, "log"), disk.Writer);
        var settings = new FasterLogSettings
        {
            LogDevice = device,
            // FastCommitMode puts a commit record into the log with each commit, and recovery scans forward from the
            // last metadata file for them; by default FASTER still writes (and deletes) a metadata file per commit,
            // several file-system calls and a synchronous write each time. One file per CommitMetadataEvery commits
            // keeps that scan short while the commit path stays in the log.
            LogCommitManager = new DeviceLogCommitCheckpointManager(new LocalStorageNamedDeviceFactory(),
                new DefaultCheckpointNamingScheme(commits), removeOutdated: true,
                fastCommitThrottleFreq: CommitMetadataEvery),
            PageSizeBits = geometry.PageSizeBits,
            MemorySizeBits = geometry.MemorySizeBits,
            SegmentSizeBits = geometry.SegmentSizeBits,
            LogChecksum = LogChecksumType.PerEntry,
            TryRecoverLatest = true,
            RemoveOutdatedCommits = true,
            FastCommitMode = true,
        };
        FasterLog log;
        try
        {
            log = new FasterLog(settings);
        }
        catch
        {
            device.Dispose();
            throw;
        }
        long cookie = log.RecoveredCookie is { Length: 8 } bytes ? BitConverter.ToInt64(bytes) : 0;
        return new DurableLog(log, device, geometry, disk.Commits, cookie);
    }

    /// <summary>The last commit that completed: everything before its address is durable.</summary>
    public DurablePoint Durable => _durable;

    /// <summary>Cancelled when a device error has put the log in its failed state.</summary>
    public CancellationToken Failed => _failed.Token;

    /// <summary>True once a device error has put the log in its failed state (readable after the log closed).</summary>
    public bool HasFailed => _failure is not null;

    /// <summary>First address still in the log (moves up on truncation).</summary>
    public long BeginAddress => _log.BeginAddress;

    /// <summary>Address after the last enqueued entry (durable or not).</summary>
    public long TailAddress => _log.TailAddress;

    /// <summary>
    /// Runs <paramref name="append"/> under the append lock and, unless <paramref name="requestCommit"/> is false,
    /// asks for a commit afterwards. Entries appended without asking ride along with the next commit.
    /// </summary>
    public TResult Append<TState, TResult>(TState state, AppendAction<TState, TResult> append, bool requestCommit = true)
    {
        ThrowIfFailed();
        TResult result;
        lock (_appendLock)
        {
            if (_closed)
                throw new BrokerException(BrokerErrorCode.ShuttingDown, "the log is closing");
            var scope = new AppendScope(_log, _maxEntryBytes) { Cookie = _cookie };
            try
            {
                result = append(state, ref scope);
            }
            catch (Exception error)
            {
                // Enqueued entries cannot be taken back: a failed append leaves the log unusable rather than
                // letting a later commit make half of it durable.
                Fail(error);
                throw StorageFailure(error);
            }
            _cookie = scope.Cookie;
        }
        if (requestCommit)
            _commitRequested.Release();
        return result;
    }

    /// <summary>
    /// Moves the cookie (a topic's next offset) up to <paramref name="cookie"/> and asks for a commit that stores it:
    /// for a log that recovered to an earlier end than its readers had seen, so that no offset is handed out twice.
    /// </summary>
    public void AdvanceCookie(long cookie)
    {
        lock (_appendLock)
        {
            if (cookie <= _cookie)
                return;
            _cookie = cookie;
        }
        lock (_waiterLock)
            _durable = _durable with { Cookie = Math.Max(_durable.Cookie, cookie) };
        _commitRequested.Release();
    }

    /// <summary>Completes once a commit covering every entry that ends at or before <paramref name="untilAddress"/> is durable.</summary>
    public Task WaitForDurableAsync(long untilAddress)
    {
        lock (_waiterLock)
        {
            if (_failure is { } failure)
                return Task.FromException(StorageFailure(failure));
            if (untilAddress <= _durable.Address)
                return Task.CompletedTask;
            if (_finalCommitDone)
                return Task.FromException(new BrokerException(BrokerErrorCode.ShuttingDown, "the log is closing"));
            var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue(waiter, untilAddress);
            return waiter.Task;
        }
    }

    /// <summary>
    /// A reader of durable entries from <paramref name="beginAddress"/> on, which can wait for new commits at the end;
    /// damaged entries are skipped and reported to <paramref name="onDamage"/> (see <see cref="LogReader"/>).
    /// </summary>
    public LogReader Scan(long beginAddress, Action<LogDamage>? onDamage = null) =>
        new(begin => _log.Scan(Math.Max(begin, _log.BeginAddress), long.MaxValue), beginAddress, _pageSizeBits, onDamage);

    /// <summary>
    /// Every durable entry from <paramref name="beginAddress"/> up to <paramref name="endAddress"/> (a commit
    /// point), with their addresses; ends at the end address instead of waiting for more.
    /// </summary>
    public async IAsyncEnumerable<(byte[] Entry, int Length, long Address)> ReadRangeAsync(long beginAddress, long endAddress,
        Action<LogDamage>? onDamage = null, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var reader = new LogReader(begin => _log.Scan(Math.Max(begin, _log.BeginAddress), endAddress), beginAddress, _pageSizeBits, onDamage);
        while (true)
        {
            if (reader.TryGetNext(out byte[] entry, out int length, out long address, out _))
            {
                yield return (entry, length, address);
                continue;
            }
            if (reader.NextAddress >= endAddress || !await reader.WaitAsync(cancellationToken).ConfigureAwait(false))
                yield break;
        }
    }

    /// <summary>Reads the entry at <paramref name="address"/> (from memory or disk), joining its fragments; null when none (intact) starts there.</summary>
    public async ValueTask<byte[]?> ReadAsync(long address, CancellationToken cancellationToken)
    {
        byte[] entry;
        int length;
        try
        {
            (entry, length) = await _log.ReadAsync(address, token: cancellationToken).ConfigureAwait(false);
        }
        catch (FasterException error) when (error.Message.StartsWith("Checksum failed", StringComparison.Ordinal))
        {
            // Damaged on disk since it was written (FASTER has no exception type of its own for it, only this message).
            // Other read failures still throw: a transient I/O error must not make a message look gone.
            return null;
        }
        if (entry is null || !EntryFragments.IsHead(entry.AsSpan(0, length)))
            return entry;
        // A fragmented entry: its fragments follow the head, all within the same commit. The scan starts at the
        // log's begin address if a truncation passed the head meanwhile: then the first entry is another one.
        await foreach (var (whole, wholeLength, found) in ReadRangeAsync(address, _durable.Address, cancellationToken: cancellationToken).ConfigureAwait(false))
        {
            if (found != address)
                return null;
            return wholeLength == whole.Length ? whole : whole.AsSpan(0, wholeLength).ToArray();
        }
        return null;
    }

    /// <summary>
    /// The log below <paramref name="address"/> is consumed but kept on disk (for a restart's scan): the whole segments
    /// below it leave the page cache.
    /// </summary>
    public void DropCachedBelow(long address) => _device.DropCachedSegmentsBelow((int)(Math.Min(address, Durable.Address) >> _segmentSizeBits));

    /// <summary>Frees the log below <paramref name="address"/> (an entry start); persisted with the next commit.</summary>
    public void TruncateUntil(long address)
    {
        lock (_appendLock)
            _log.TruncateUntil(address);
        _commitRequested.Release();
    }

    /// <summary>
    /// Frees the log below <paramref name="address"/> (an entry start) and completes once a commit recording the new
    /// begin address has completed: after a crash the log then recovers without what was below it (a purge).
    /// </summary>
    public Task TruncateUntilAsync(long address)
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_appendLock)
        {
            ThrowIfFailed();
            if (_closed)
                throw new BrokerException(BrokerErrorCode.ShuttingDown, "the log is closing");
            _log.TruncateUntil(address);
            (_truncationWaiters ??= []).Add(waiter);
        }
        _commitRequested.Release();
        return waiter.Task;
    }

    private async Task CommitLoopAsync()
    {
        var token = _shutdown.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                await _commitRequested.WaitAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            // Everything requested so far is covered by this one commit.
            while (_commitRequested.Wait(0)) { }
            try
            {
                await CommitOnceAsync().ConfigureAwait(false);
            }
            catch (Exception error)
            {
                Fail(error);
                return;
            }
        }
    }

    private async Task CommitOnceAsync()
    {
        await _commitGate.EnterAsync().ConfigureAwait(false);
        try
        {
            ValueTask<(bool Success, long CommitTail, long CommitNumber)> commit;
            long cookie;
            List<TaskCompletionSource>? truncations;
            lock (_appendLock)
            {
                cookie = _cookie;
                truncations = _truncationWaiters;
                _truncationWaiters = null;
                if (_log.TailAddress == _lastCommitTail && cookie == _lastCommitCookie && _log.BeginAddress == _log.CommittedBeginAddress)
                {
                    CompleteWaiters(_durable);
                    truncations?.ForEach(static t => t.TrySetResult());
                    return;
                }
                commit = _log.CommitStronglyAsync(BitConverter.GetBytes(cookie));
            }
            (bool success, long commitTail, _) = (false, 0, 0);
            try
            {
                (success, commitTail, _) = await commit.ConfigureAwait(false);
                if (!success)
                    throw new IOException("FasterLog refused the commit");
            }
            catch (Exception error)
            {
                truncations?.ForEach(t => t.TrySetException(StorageFailure(error)));
                throw;
            }
            _lastCommitTail = commitTail;
            _lastCommitCookie = cookie;
            CompleteWaiters(new DurablePoint(commitTail, cookie));
            truncations?.ForEach(static t => t.TrySetResult());
        }
        finally
        {
            _commitGate.Exit();
        }
    }

    private void CompleteWaiters(DurablePoint durable)
    {
        lock (_waiterLock)
        {
            if (durable.Address > _durable.Address)
                _durable = durable;
            while (_waiters.TryPeek(out var waiter, out long address) && address <= _durable.Address)
            {
                _waiters.Dequeue();
                waiter.TrySetResult();
            }
        }
    }

    private void Fail(Exception error)
    {
        lock (_waiterLock)
        {
            _failure = error;
            var failure = StorageFailure(error);
            while (_waiters.TryDequeue(out var waiter, out _))
                waiter.TrySetException(failure);
        }
        // Readers waiting for new commits would otherwise spin on the log's failed commit task.
        _failed.Cancel();
    }

    private void ThrowIfFailed()
    {
        if (_failure is { } failure)
            throw StorageFailure(failure);
    }

    /// <summary>
    /// What callers are told once the log failed: a full disk (the device saw a write fail for lack of space, or the
    /// failure says so) is one they can wait out; anything else is a device failure. Either way the topic is reopened
    /// from its last commit on a later use (<see cref="Topics.TopicSlot"/>).
    /// </summary>
    private BrokerException StorageFailure(Exception error) => _device.OutOfSpace || DiskErrors.IsOutOfSpace(error)
        ? new(BrokerErrorCode.DiskFull, "the disk is full: nothing of this request was written; it works again once space is freed", error)
        : new(BrokerErrorCode.StorageFailure, "the storage device failed: nothing of this request was written; the topic is reopened from its last commit on its next use", error);

    /// <summary>Why the log failed, in the words callers get (null while it has not failed).</summary>
    public BrokerException? Failure => _failure is { } failure ? StorageFailure(failure) : null;

    /// <summary>
    /// For crash tests: the next <see cref="DisposeAsync"/> closes without its final commit, leaving the files as a
    /// process kill would (what was not committed is not recovered).
    /// </summary>
    internal void AbandonOnDispose() => _abandoned = true;

    public async ValueTask DisposeAsync()
    {
        // From here on appends are refused, so the final commit below covers every append that was accepted.
        lock (_appendLock)
            _closed = true;
        _shutdown.Cancel();
        try
        {
            await _commitLoop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        // A graceful close commits what was appended, so no waiter is left without an answer it could have had.
        if (_failure is null && !_abandoned)
        {
            try
            {
                await CommitOnceAsync().ConfigureAwait(false);
            }
            catch (Exception error)
            {
                Fail(error);
            }
        }
        lock (_waiterLock)
        {
            _finalCommitDone = true;
            var shuttingDown = new BrokerException(BrokerErrorCode.ShuttingDown, "the log is closing");
            while (_waiters.TryDequeue(out var waiter, out _))
                waiter.TrySetException(shuttingDown);
        }
        lock (_appendLock)
            _truncationWaiters?.ForEach(t => t.TrySetException(new BrokerException(BrokerErrorCode.ShuttingDown, "the log is closing")));
        _log.Dispose();
        _device.Dispose();
        _commitRequested.Dispose();
        _shutdown.Dispose();
        _failed.Dispose();
    }
}

/// <summary>A completed commit: every entry before <see cref="Address"/> is durable; <see cref="Cookie"/> was stored with it.</summary>
internal sealed record DurablePoint(long Address, long Cookie);
