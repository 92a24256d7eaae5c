using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Broker.Perf.Peers;
using Broker.Perf.Peers.Systems;
using Spectre.Console;

if (Broker.Perf.RunnerGcBudget.NeedsRestart)
    return await Broker.Perf.RunnerGcBudget.RunRestartedAsync(args);

var systems = new Option<string>("--systems")
{
    Description = "systems to run, comma-separated: broker, redis-always, redis-everysec, nats-file, rabbitmq-quorum",
    DefaultValueFactory = _ => "broker,redis-always,redis-everysec,nats-file,rabbitmq-quorum",
};
var workloads = new Option<string>("--workloads") { Description = "W1, W2, and RATE (open loop at each of --rates)", DefaultValueFactory = _ => "W2,RATE" };
var rates = new Option<string>("--rates") { Description = "open-loop rates in messages per second, comma-separated", DefaultValueFactory = _ => "5000,20000" };
var rounds = new Option<int>("--rounds") { Description = "rounds; each runs every workload on every system, interleaved", DefaultValueFactory = _ => 3 };
var messages = new Option<long>("--messages") { Description = "messages per closed-loop run", DefaultValueFactory = _ => 200_000 };
var rateSeconds = new Option<int>("--rate-seconds") { Description = "length of an open-loop run", DefaultValueFactory = _ => 10 };
// A million: a JIT-compiled server (ours) is still tiering up its hot methods after shorter warm-ups, and pays for
// that compilation during the measurement (docs/perf.md, "Warm-up"); servers compiled ahead are unaffected.
var warmup = new Option<long>("--warmup") { Description = "messages of a closed-loop warm-up on each started system before it is measured (an open-loop run rate workload also gets 3 s at its rate)", DefaultValueFactory = _ => 1_000_000 };
var payload = new Option<int>("--payload") { Description = "payload bytes", DefaultValueFactory = _ => 1024 };
var json = new Option<string?>("--json") { Description = "where to write every run's result as JSON" };

var root = new RootCommand("Issue 20's side-by-side runs: this broker against Redis Streams, NATS JetStream and RabbitMQ quorum queues, started on loopback, interleaved.")
{
    systems, workloads, rates, rounds, messages, rateSeconds, warmup, payload, json,
};
root.SetAction(async (parse, cancellationToken) =>
{
    var names = parse.GetValue(systems)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    var shapes = new List<WorkloadSettings>();
    foreach (string workload in parse.GetValue(workloads)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
    {
        if (!workload.Equals("RATE", StringComparison.OrdinalIgnoreCase))
        {
            shapes.Add(WorkloadSettings.Preset(workload, parse.GetValue(messages), parse.GetValue(payload), null));
            continue;
        }
        foreach (string rate in parse.GetValue(rates)!.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            double perSecond = double.Parse(rate, CultureInfo.InvariantCulture);
            shapes.Add(WorkloadSettings.Preset("RATE", (long)(perSecond * parse.GetValue(rateSeconds)), parse.GetValue(payload), perSecond));
        }
    }
    var results = new List<RunResult>();
    for (int round = 1; round <= parse.GetValue(rounds); round++)
    {
        foreach (var shape in shapes)
        {
            foreach (string name in names)
            {
                await using IPeerSystem system = name switch
                {
                    "broker" => new OurBroker(),
                    "redis-always" => new RedisStreams(fsyncAlways: true),
                    "redis-everysec" => new RedisStreams(fsyncAlways: false),
                    "nats-file" => new NatsJetStream(),
                    "rabbitmq-quorum" => new RabbitMqQuorum(),
                    _ => throw new ArgumentException($"unknown system '{name}'"),
                };
                await system.StartAsync(cancellationToken);
                var result = await new Workload(system, shape).RunAsync(parse.GetValue(warmup), cancellationToken);
                results.Add(result);
                Console.WriteLine($"round {round} {result.Workload,-12} {result.System,-16} publish {result.PublishPerSecond,9:N0}/s  end-to-end {result.EndToEndPerSecond,9:N0}/s  " +
                    $"p50 {result.P50Ms,7} p99 {result.P99Ms,8} p99.9 {result.P999Ms,8} max {result.MaxMs,8} ms  server CPU {result.ServerCpuSecondsPerMillion,6:N1} s/M  " +
                    $"client CPU {result.ClientCpuSecondsPerMillion,5:N1} s/M  " +
                    $"missing {result.Missing} duplicates {result.Duplicates}");
            }
        }
    }
    PrintSummary(results, names);
    if (parse.GetValue(json) is { } path)
        await File.WriteAllTextAsync(path, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }), cancellationToken);
    return results.All(result => result.Missing == 0) ? 0 : 1;
});
return await root.Parse(args).InvokeAsync();

// Medians over the rounds, with the range, and each peer's ratio to this broker (ours / theirs: above 1 is ours ahead).
static void PrintSummary(List<RunResult> results, string[] systems)
{
    if (Console.IsOutputRedirected)
        AnsiConsole.Profile.Width = 200;   // a log file: no terminal to wrap the columns to
    foreach (var workload in results.Select(result => result.Workload).Distinct())
    {
        var ours = results.Where(r => r.Workload == workload && r.System == "broker").ToList();
        var table = new Table().Title($"[bold]{workload}[/] (medians of {results.Count(r => r.Workload == workload) / Math.Max(1, systems.Length)} rounds; ratio = broker / system)")
            .AddColumns("system", "end-to-end msg/s", "broker ÷ system", "p99 ms", "system p99 ÷ broker p99", "server CPU s/M", "client CPU s/M", "missing");
        foreach (string system in systems)
        {
            var runs = results.Where(r => r.Workload == workload && r.System == system).ToList();
            if (runs.Count == 0)
                continue;
            double rate = Median(runs.Select(r => r.EndToEndPerSecond));
            double p99 = Median(runs.Select(r => r.P99Ms));
            table.AddRow(new[]
            {
                system,
                $"{rate:N0} [{runs.Min(r => r.EndToEndPerSecond):N0}–{runs.Max(r => r.EndToEndPerSecond):N0}]",
                ours.Count == 0 ? "-" : $"{Median(ours.Select(r => r.EndToEndPerSecond)) / rate:N2}",
                $"{p99:N1} [{runs.Min(r => r.P99Ms):N1}–{runs.Max(r => r.P99Ms):N1}]",
                ours.Count == 0 ? "-" : $"{p99 / Math.Max(0.01, Median(ours.Select(r => r.P99Ms))):N2}",
                $"{Median(runs.Select(r => r.ServerCpuSecondsPerMillion)):N1}",
                $"{Median(runs.Select(r => r.ClientCpuSecondsPerMillion)):N1}",
                $"{runs.Sum(r => r.Missing)}",
            }.Select(Markup.Escape).ToArray());
        }
        AnsiConsole.Write(table);
    }
}

static double Median(IEnumerable<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count == 0 ? 0 : sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
}
