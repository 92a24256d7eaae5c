using System.Diagnostics;

namespace Broker.Perf;

/// <summary>
/// The load generator's own CPU and garbage collection over a run. It shares the two cores with the broker, and in an
/// open-loop run its own pauses make batches late, which the latency counts (from the due time) as the system's delay.
/// </summary>
internal sealed record LoadGeneratorCosts(double CpuSecondsPerMillion, long Collections, long Gen2Collections, long GcPauseMs)
{
    public static LoadGeneratorCosts Between(Snapshot before, Snapshot after, long messages) => new(
        (after.Cpu - before.Cpu).TotalSeconds / Math.Max(1, messages) * 1_000_000,
        after.Collections - before.Collections,
        after.Gen2Collections - before.Gen2Collections,
        (long)(after.GcPause - before.GcPause).TotalMilliseconds);

    public override string ToString() =>
        $"CPU {CpuSecondsPerMillion:N2} s per million, {Collections:N0} GCs ({Gen2Collections:N0} gen2), paused {GcPauseMs:N0} ms";

    public readonly record struct Snapshot(TimeSpan Cpu, long Collections, long Gen2Collections, TimeSpan GcPause)
    {
        public static Snapshot Take()
        {
            using var self = Process.GetCurrentProcess();
            return new Snapshot(self.TotalProcessorTime, GC.CollectionCount(0), GC.CollectionCount(2), GC.GetTotalPauseDuration());
        }
    }
}
