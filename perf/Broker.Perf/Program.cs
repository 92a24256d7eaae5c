using System.CommandLine;
using Broker.Perf;

if (RunnerGcBudget.NeedsRestart)
    return await RunnerGcBudget.RunRestartedAsync(args);

var workload = new Argument<string>("workload") { Description = "W1 to W9, S1 (1M scheduled messages held), or R1 (recovery after SIGKILL; see docs/perf.md)", DefaultValueFactory = _ => "W2" };
var messages = new Option<long?>("--messages") { Description = "messages to publish" };
var producers = new Option<int?>("--producers") { Description = "producer streams" };
var consumers = new Option<int?>("--consumers") { Description = "consumers per group and topic" };
var groups = new Option<int?>("--groups") { Description = "consumer groups" };
var topics = new Option<int?>("--topics") { Description = "topics (traffic spread across them)" };
var payload = new Option<int?>("--payload") { Description = "payload bytes (default 1024)" };
var batch = new Option<int?>("--batch") { Description = "messages per publish request" };
var window = new Option<int?>("--window") { Description = "publish batches in flight per producer" };
var maxInFlight = new Option<int?>("--max-in-flight") { Description = "max in flight per consumer" };
var nack = new Option<double?>("--nack") { Description = "fraction of first deliveries nacked" };
var delayMs = new Option<uint?>("--delay-ms") { Description = "delay of the scheduled messages (W9, S1)" };
var delayFraction = new Option<double?>("--delay-fraction") { Description = "fraction of messages scheduled (W9: 0.1)" };
var priorityLevels = new Option<int?>("--priority-levels") { Description = "groups order by priority with this many levels; 0 for publish order (W9: 4)" };
var messageIds = new Option<bool?>("--message-ids") { Description = "a message id on every message (W9: true)" };
var rate = new Option<double?>("--rate") { Description = "open-loop publish rate, messages per second in total" };
var address = new Option<string?>("--address") { Description = "target a running broker (loopback only) instead of starting one" };
var storageOnly = new Option<bool>("--storage-only") { Description = "also measure the same appends straight into the storage layer" };
var json = new Option<string?>("--json") { Description = "where to write the JSON result (default perf/results/<workload>-<time>.json)" };
var brokerArgs = new Option<string?>("--broker-args") { Description = "extra arguments for the broker process" };
var inFlightAtKill = new Option<int?>("--in-flight-at-kill") { Description = "R1: deliveries held unacked when the broker is killed (default 10,000)" };
var warmup = new Option<long?>("--warmup") { Description = "messages of a W2-shaped warm-up run before measuring (default 500,000; 0 measures a cold broker)" };

var root = new RootCommand("Load-test runner for the broker: throughput, latency percentiles, broker CPU and RSS.")
{
    workload, messages, producers, consumers, groups, topics, payload, batch, window, maxInFlight, nack, delayMs, delayFraction, priorityLevels, messageIds, rate, address, storageOnly, json, brokerArgs, warmup, inFlightAtKill,
};
root.SetAction(async (parse, cancellationToken) =>
{
    var preset = PerfSettings.Preset(parse.GetValue(workload)!);
    var settings = preset with
    {
        Messages = parse.GetValue(messages) ?? preset.Messages,
        Producers = parse.GetValue(producers) ?? preset.Producers,
        ConsumersPerGroup = parse.GetValue(consumers) ?? preset.ConsumersPerGroup,
        Groups = parse.GetValue(groups) ?? preset.Groups,
        Topics = parse.GetValue(topics) ?? preset.Topics,
        PayloadBytes = parse.GetValue(payload) ?? preset.PayloadBytes,
        BatchSize = parse.GetValue(batch) ?? preset.BatchSize,
        PublishWindow = parse.GetValue(window) ?? preset.PublishWindow,
        MaxInFlight = parse.GetValue(maxInFlight) ?? preset.MaxInFlight,
        NackFraction = parse.GetValue(nack) ?? preset.NackFraction,
        DelayMs = parse.GetValue(delayMs) ?? preset.DelayMs,
        DelayFraction = parse.GetValue(delayFraction) ?? preset.DelayFraction,
        PriorityLevels = parse.GetValue(priorityLevels) ?? preset.PriorityLevels,
        MessageIds = parse.GetValue(messageIds) ?? preset.MessageIds,
        Rate = parse.GetValue(rate) ?? preset.Rate,
        WarmupMessages = parse.GetValue(warmup) ?? preset.WarmupMessages,
        InFlightAtKill = parse.GetValue(inFlightAtKill) ?? preset.InFlightAtKill,
    };
    if (settings.Workload == "S1")
    {
        await ScheduledHoldRun.RunAsync(settings, parse.GetValue(brokerArgs), cancellationToken);
        return 0;
    }
    var report = await PerfRunner.RunAsync(settings, parse.GetValue(address) is { } target ? new Uri(target) : null, parse.GetValue(storageOnly), parse.GetValue(brokerArgs), cancellationToken);
    report.Print();
    string path = parse.GetValue(json) ?? Path.Combine("perf", "results", $"{settings.Workload}-{DateTime.UtcNow:yyyyMMdd-HHmmss}.json");
    report.WriteJson(path);
    Console.WriteLine($"results: {path}");
    return report.Passed ? 0 : 1;
});
return await root.Parse(args).InvokeAsync();
