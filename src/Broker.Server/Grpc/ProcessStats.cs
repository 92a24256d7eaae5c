using System.Diagnostics;
using Broker.Protocol.V1;

namespace Broker.Server.Grpc;

/// <summary>
/// This process's counters since it started, as <c>GetServerStats</c> reports them (docs/semantics.md). The file is
/// also compiled into perf/Broker.Perf.Floor, so the protocol floor's costs are counted exactly as the broker's.
/// </summary>
internal static class ProcessStats
{
    public static ServerStats Capture()
    {
        using var process = Process.GetCurrentProcess();
        return new ServerStats
        {
            UptimeMs = (ulong)Math.Max(0, (DateTime.Now - process.StartTime).TotalMilliseconds),
            CpuTimeMs = (ulong)process.TotalProcessorTime.TotalMilliseconds,
            WorkingSetBytes = (ulong)process.WorkingSet64,
            AllocatedBytes = (ulong)GC.GetTotalAllocatedBytes(precise: true),
            HeapBytes = (ulong)GC.GetGCMemoryInfo().HeapSizeBytes,
            Gen0Collections = (ulong)GC.CollectionCount(0),
            Gen1Collections = (ulong)GC.CollectionCount(1),
            Gen2Collections = (ulong)GC.CollectionCount(2),
            GcPauseMs = (ulong)GC.GetTotalPauseDuration().TotalMilliseconds,
            ThreadPoolWorkItems = (ulong)ThreadPool.CompletedWorkItemCount,
            ThreadPoolThreads = (uint)ThreadPool.ThreadCount,
            LockContentions = (ulong)Monitor.LockContentionCount,
            JitCompiledMethods = (ulong)System.Runtime.JitInfo.GetCompiledMethodCount(),
            JitTimeMs = (ulong)System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds,
        };
    }
}
