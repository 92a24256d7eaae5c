using Broker.Storage.Topics;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Broker.Server.Hosting;

/// <summary>
/// Healthy while the broker takes calls and every open topic's storage works. Unhealthy while it shuts down (it
/// refuses new calls) or when a topic's log or group state failed (a full disk, an I/O error: that topic refuses
/// publishes until it is reopened); the description names the failed topics and why, and the data lists each.
/// </summary>
internal sealed class StorageHealthCheck(TopicStore store, ShutdownDrain drain) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (drain.Draining.IsCancellationRequested)
            return Task.FromResult(HealthCheckResult.Unhealthy("shutting down: new calls are refused"));
        var failed = store.OpenTopics()
            .Where(topic => topic.StorageFailed)
            .ToDictionary(topic => topic.Name, topic => (object)(topic.StorageFailure?.Message ?? "storage failed"));
        if (failed.Count == 0)
            return Task.FromResult(HealthCheckResult.Healthy($"{store.OpenTopicCount} open topic(s), storage working"));
        string names = string.Join(", ", failed.Keys.Order(StringComparer.Ordinal).Take(10));
        return Task.FromResult(HealthCheckResult.Unhealthy($"storage failed in {failed.Count} topic(s): {names}", data: failed));
    }
}
