namespace Broker.Storage.Logs;

/// <summary>
/// Bounds how many logs of one store commit at the same time. FASTER's managed device writes with synchronous,
/// write-through I/O on thread-pool threads, so a commit holds a pool thread until the disk answers; with hundreds of
/// topics committing at once that starved the pool (measured: 1,000 topics stalled for 26 s). Commits waiting here
/// wait asynchronously and hold no thread, and each log's next commit then covers everything appended meanwhile, so
/// the bound costs no throughput: it turns into larger group commits.
/// </summary>
internal sealed class CommitGate(int maxConcurrentCommits) : IDisposable
{
    private readonly SemaphoreSlim _slots = new(maxConcurrentCommits, maxConcurrentCommits);

    public Task EnterAsync() => _slots.WaitAsync();

    public void Exit() => _slots.Release();

    public void Dispose() => _slots.Dispose();
}
