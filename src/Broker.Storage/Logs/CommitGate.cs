namespace Broker.Storage.Logs;

/// <summary>
/// Bounds how many logs of one store commit at the same time. It was added when FASTER's managed device wrote on
/// thread-pool threads and 1,000 topics committing at once starved the pool (measured: stalled for 26 s). With the
/// broker's own device (<see cref="Files.SegmentFileDevice"/>) writes run on the store's disk-writer threads, one per
/// slot, so the gate bounds the writes in flight: commits waiting here hold no thread, and each log's next commit then
/// covers everything appended meanwhile, so the bound turns into larger group commits.
/// </summary>
internal sealed class CommitGate(int maxConcurrentCommits) : IDisposable
{
    private readonly SemaphoreSlim _slots = new(maxConcurrentCommits, maxConcurrentCommits);

    public Task EnterAsync() => _slots.WaitAsync();

    public void Exit() => _slots.Release();

    public void Dispose() => _slots.Dispose();
}
