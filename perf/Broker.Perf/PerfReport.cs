using System.Text.Json;
using HdrHistogram;
using Spectre.Console;

namespace Broker.Perf;

/// <summary>One run's numbers: printed as a table, written as JSON.</summary>
internal sealed record PerfReport
{
    public required string Workload { get; init; }
    public required PerfSettings Settings { get; init; }
    public required string Machine { get; init; }
    public double PublishMessagesPerSecond { get; init; }
    public double EndToEndMessagesPerSecond { get; init; }
    public double PublishMegabytesPerSecond { get; init; }
    /// <summary>
    /// Messages delivered per second to each group, up to the last delivery with each scheduled message's delay taken
    /// off its delivery time: the rate without the waits the workload asked for (W9's end to end otherwise counts the
    /// last scheduled messages' delay; null for runners that do not track it).
    /// </summary>
    public double? DeliveredLessScheduleWaitMessagesPerSecond { get; init; }
    /// <summary>Publish-then-drain workloads: messages per second of the drain alone.</summary>
    public double? DrainMessagesPerSecond { get; init; }
    public required Percentiles PublishToAckMs { get; init; }
    public required Percentiles PublishToDeliverMs { get; init; }
    /// <summary>Open-loop runs: how late the load generator's own timer woke for a due batch.</summary>
    public Percentiles? SenderLatenessMs { get; init; }
    public double BrokerCpuSecondsPerMillion { get; init; }
    /// <summary>The broker runtime's allocation, thread-pool hops and collections during the run (null for recovery runs).</summary>
    public BrokerRuntimeCosts? BrokerPerMessage { get; init; }
    /// <summary>What the load generator (this process) spent on the run: it shares the machine with the broker.</summary>
    public LoadGeneratorCosts? LoadGenerator { get; init; }
    public double BrokerPeakRssMiB { get; init; }
    public double BrokerRssMinMiB { get; init; }
    public double BrokerRssMaxMiB { get; init; }
    /// <summary>RSS min and max over the measured run after its first tenth.</summary>
    public Range? BrokerRssUnderLoadMiB { get; init; }
    public long Published { get; init; }
    public long PublishErrors { get; init; }
    public long Delivered { get; init; }
    public long Acked { get; init; }
    public long Nacked { get; init; }
    public long Duplicates { get; init; }
    public long Missing { get; init; }
    public double? StorageCeilingMessagesPerSecond { get; init; }
    /// <summary>Recovery runs: SIGKILL to the restarted broker listening again.</summary>
    public double? RecoveryToListeningSeconds { get; init; }
    /// <summary>Recovery runs: SIGKILL to the first delivery of the pending messages.</summary>
    public double? RecoveryToFirstDeliverySeconds { get; init; }
    public bool Passed => Missing == 0 && PublishErrors == 0;

    public sealed record Range(double Min, double Max)
    {
        /// <summary>Half the range as a fraction of its midpoint: the range is midpoint ± this.</summary>
        public double PlusMinus => Max + Min == 0 ? 0 : (Max - Min) / (Max + Min);

        public override string ToString() => $"{Min:N0}–{Max:N0} MiB ({(Max + Min) / 2:N0} ± {PlusMinus:P0})";
    }

    public sealed record Percentiles(double P50, double P99, double P999, double Max)
    {
        public static Percentiles From(HistogramBase histogram) => histogram.TotalCount == 0
            ? new Percentiles(0, 0, 0, 0)
            : new Percentiles(Ms(histogram.GetValueAtPercentile(50)), Ms(histogram.GetValueAtPercentile(99)),
                Ms(histogram.GetValueAtPercentile(99.9)), Ms(histogram.GetMaxValue()));

        private static double Ms(long microseconds) => Math.Round(microseconds / 1000.0, 2);

        public override string ToString() => $"p50 {P50} / p99 {P99} / p99.9 {P999} / max {Max}";
    }

    public void Print()
    {
        var table = new Table().Title($"[bold]{Workload}[/] {Describe(Settings)}").AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        table.AddRow("publish msg/s (durable)", $"{PublishMessagesPerSecond:N0}");
        table.AddRow("end-to-end msg/s (acked by every group)", $"{EndToEndMessagesPerSecond:N0}");
        if (DeliveredLessScheduleWaitMessagesPerSecond is double lessWait)
            table.AddRow("delivered msg/s, schedule's wait left out", $"{lessWait:N0}");
        table.AddRow("publish MB/s", $"{PublishMegabytesPerSecond:N1}");
        if (DrainMessagesPerSecond is double drain)
            table.AddRow("drain msg/s (after publishing)", $"{drain:N0}");
        table.AddRow("publish→ack latency ms", PublishToAckMs.ToString());
        table.AddRow("publish→deliver latency ms", PublishToDeliverMs.ToString());
        if (SenderLatenessMs is { } lateness)
            table.AddRow("load generator timer lateness ms", lateness.ToString());
        table.AddRow("broker CPU s per million msgs", BrokerCpuSecondsPerMillion == 0 ? "n/a" : $"{BrokerCpuSecondsPerMillion:N2}");
        if (BrokerPerMessage is { } costs)
        {
            table.AddRow("broker per message", costs.Allocation);
            table.AddRow("broker garbage collections", costs.Collections);
            table.AddRow("broker JIT (0 when warm)", costs.Jit);
        }
        if (LoadGenerator is { } generator)
            table.AddRow("load generator (this process)", generator.ToString());
        table.AddRow("broker peak RSS MiB", BrokerPeakRssMiB == 0 ? "n/a" : $"{BrokerPeakRssMiB:N0} (samples {BrokerRssMinMiB:N0}–{BrokerRssMaxMiB:N0})");
        if (BrokerRssUnderLoadMiB is { } underLoad)
            table.AddRow("broker RSS under load (after the first tenth)", underLoad.ToString());
        if (RecoveryToListeningSeconds is double listening)
            table.AddRow("recovery after SIGKILL (s)", $"listening {listening:N2}, first delivery {RecoveryToFirstDeliverySeconds:N2}");
        if (StorageCeilingMessagesPerSecond is double ceiling)
            table.AddRow("storage-only ceiling msg/s", $"{ceiling:N0} (end-to-end = {EndToEndMessagesPerSecond / ceiling:P0})");
        table.AddRow("correctness", $"published {Published:N0}, delivered {Delivered:N0}, acked {Acked:N0}, nacked {Nacked:N0}, duplicates {Duplicates:N0}, missing {Missing:N0}, publish errors {PublishErrors:N0}");
        table.AddRow("result", Passed ? "[green]PASS[/]" : "[red]FAIL: messages missing or publishes failed[/]");
        AnsiConsole.Write(table);
    }

    public void WriteJson(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }));
    }

    private static string Describe(PerfSettings s) =>
        $"{s.Producers}p / {s.Groups}g×{s.ConsumersPerGroup}c / {s.Topics} topic(s), {s.Messages:N0} × {s.PayloadBytes} B, batch {s.BatchSize}" +
        (s.Rate is double rate ? $", rate {rate:N0}/s" : "") + (s.NackFraction > 0 ? $", nack {s.NackFraction:P0}" : "") +
        (s.PublishThenDrain ? ", publish then drain" : "") + (s.KillBeforeDrain ? ", SIGKILL + restart before draining" : "") + (s.ViaSdk ? ", via SDK" : "");
}
