using Microsoft.Extensions.Logging;
using Broker.Storage.Files;

namespace Broker.Storage.Logs;

/// <summary>What every log of one store shares: the bound on concurrent commits and the threads that write to disk.</summary>
internal sealed class StoreDisk(int maxConcurrentCommits, ILogger logger) : IDisposable
{
    public CommitGate Commits { get; } = new(maxConcurrentCommits);

    /// <summary>As many writer threads as commits may run at once: a commit's write never waits for another's thread.</summary>
    public DiskWriter Writer { get; } = new(maxConcurrentCommits, logger);

    /// <summary>Call once every log of the store is closed.</summary>
    public void Dispose()
    {
        Writer.Dispose();
        Commits.Dispose();
    }
}
