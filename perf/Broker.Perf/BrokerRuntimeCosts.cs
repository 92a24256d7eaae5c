using Broker.Protocol.V1;

namespace Broker.Perf;

/// <summary>
/// What the broker's runtime did for the measured run, from its server stats taken before and after: allocation and
/// thread-pool hops per message (the per-message costs the issue asks to drive down), and its garbage collections.
/// </summary>
internal sealed record BrokerRuntimeCosts(
    double? AllocatedBytesPerMessage,
    double ThreadPoolWorkItemsPerMessage,
    double LockContentionsPerMessage,
    long Gen0Collections,
    long Gen1Collections,
    long Gen2Collections,
    long GcPauseMs,
    double GcPauseFraction,
    double HeapAfterMiB,
    long JitCompiledMethods,
    long JitTimeMs)
{
    public static BrokerRuntimeCosts Between(ServerStats before, ServerStats after, long messages, TimeSpan elapsed)
    {
        double perMessage = Math.Max(1, messages);
        long pause = (long)(after.GcPauseMs - before.GcPauseMs);
        // The runtime's allocated-bytes count can go backwards when the GC retires a heap (server GC adapting its heap
        // count): such a run has no allocation figure rather than a wrapped-around one.
        double? allocated = after.AllocatedBytes >= before.AllocatedBytes ? (after.AllocatedBytes - before.AllocatedBytes) / perMessage : null;
        return new BrokerRuntimeCosts(
            allocated,
            (after.ThreadPoolWorkItems - before.ThreadPoolWorkItems) / perMessage,
            (after.LockContentions - before.LockContentions) / perMessage,
            (long)(after.Gen0Collections - before.Gen0Collections),
            (long)(after.Gen1Collections - before.Gen1Collections),
            (long)(after.Gen2Collections - before.Gen2Collections),
            pause,
            elapsed > TimeSpan.Zero ? pause / elapsed.TotalMilliseconds : 0,
            after.HeapBytes / 1048576.0,
            (long)(after.JitCompiledMethods - before.JitCompiledMethods),
            (long)(after.JitTimeMs - before.JitTimeMs));
    }

    public string Allocation => $"{(AllocatedBytesPerMessage is double bytes ? $"{bytes / 1024:N2} KiB" : "n/a")} allocated, {ThreadPoolWorkItemsPerMessage:N2} pool work items, {LockContentionsPerMessage:N3} lock waits";

    public string Jit => $"{JitCompiledMethods:N0} methods compiled during the run, {JitTimeMs:N0} ms";

    public string Collections => $"gen0 {Gen0Collections:N0} / gen1 {Gen1Collections:N0} / gen2 {Gen2Collections:N0}, paused {GcPauseMs:N0} ms ({GcPauseFraction:P1} of the run), heap {HeapAfterMiB:N0} MiB after";
}
