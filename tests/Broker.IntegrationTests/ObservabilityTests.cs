using System.Globalization;
using System.Text.RegularExpressions;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;

namespace Broker.IntegrationTests;

/// <summary>
/// What an operator sees without code: Prometheus metrics scraped over the HTTP/1.1 listener after real traffic, health
/// over HTTP and the standard gRPC health service, gRPC reflection, and the server's --help and --version.
/// </summary>
public sealed partial class ObservabilityTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    [Fact]
    public async Task Metrics_scraped_over_http_count_what_happened_to_a_topic_and_its_group()
    {
        string topic = await shared.NewTopicAsync("metrics");
        await shared.Client.PublishAsync(topic, Enumerable.Range(0, 10).Select(i => OutgoingMessage.FromText($"m{i}")));
        await using (var subscription = await shared.Client.SubscribeAsync(topic, "g", new SubscribeOptions
        {
            MaxInFlight = 100,
            Group = new GroupOptions { MaxDeliveries = 2 },
        }))
        {
            var first = await Receive.ExactlyAsync(subscription, 10);
            await subscription.AckAsync(first.Take(7), CancellationToken.None);
            await subscription.NackAsync(first.Skip(7), TimeSpan.Zero, "failed once");
            var again = await Receive.ExactlyAsync(subscription, 3);
            Assert.All(again, m => Assert.Equal(2, m.Attempt));
            await subscription.NackAsync(again, TimeSpan.Zero, "failed twice");  // out of deliveries: dead letters
            await WaitForAsync(async () => (await shared.Client.DescribeTopicAsync(topic)).Groups.Single().DeadLetteredTotal == 3);
        }

        string g = $"group=\"g\",topic=\"{topic}\"";
        // A scrape may show state up to a second old (one description of the topics serves each scrape's instruments).
        var metrics = await ScrapeUntilAsync(m => m.GetValueOrDefault($"broker_messages_dead_lettered_total{{{g}}}") == 3
                                                 && m.ContainsKey($"broker_messages_published_total{{topic=\"{topic}.dlq\"}}"));
        Assert.Equal(10, metrics[$"broker_messages_published_total{{topic=\"{topic}\"}}"]);
        Assert.Equal(3, metrics[$"broker_messages_published_total{{topic=\"{topic}.dlq\"}}"]);
        Assert.Equal(13, metrics[$"broker_messages_delivered_total{{{g}}}"]);
        Assert.Equal(3, metrics[$"broker_messages_redelivered_total{{{g}}}"]);
        Assert.Equal(7, metrics[$"broker_messages_acked_total{{{g}}}"]);
        Assert.Equal(6, metrics[$"broker_messages_nacked_total{{{g}}}"]);
        Assert.Equal(3, metrics[$"broker_messages_dead_lettered_total{{{g}}}"]);
        Assert.Equal(0, metrics[$"broker_group_backlog{{{g}}}"]);
        Assert.Equal(0, metrics[$"broker_group_in_flight{{{g}}}"]);
        Assert.Equal(0, metrics[$"broker_leases_expired_total{{{g}}}"]);
        Assert.True(metrics[$"broker_topic_disk_bytes{{topic=\"{topic}\"}}"] > 0);
        Assert.Equal(1, metrics[$"broker_publish_commit_duration_seconds_count{{topic=\"{topic}\"}}"]);
        Assert.True(metrics[$"broker_ack_commit_duration_seconds_count{{{g}}}"] >= 1);
        Assert.Equal(0, metrics[$"broker_group_delayed{{{g}}}"]);
        Assert.Equal(0, metrics[$"broker_group_consumers{{{g}}}"]);
        // The host's own meters come along: .NET runtime and the process.
        Assert.Contains(metrics.Keys, name => name.StartsWith("process_runtime_dotnet_gc_collections_count", StringComparison.Ordinal)
                                               || name.StartsWith("dotnet_gc_collections", StringComparison.Ordinal));
        Assert.Contains(metrics, metric => metric.Key.StartsWith("process_memory_usage_bytes", StringComparison.Ordinal) && metric.Value > 0);
    }

    [Fact]
    public async Task A_lease_that_runs_out_is_counted_as_expired_and_the_message_as_redelivered()
    {
        string topic = await shared.NewTopicAsync("metrics-lease");
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("slow job")]);
        await using (var subscription = await shared.Client.SubscribeAsync(topic, "slow", new SubscribeOptions
        {
            MaxInFlight = 1,
            Group = new GroupOptions { VisibilityTimeout = TimeSpan.FromMilliseconds(300) },
        }))
        {
            var held = await Receive.ExactlyAsync(subscription, 1);   // never settled: its lease runs out
            var again = await Receive.ExactlyAsync(subscription, 1);
            Assert.Equal((held[0].Offset, 2), (again[0].Offset, again[0].Attempt));
            await subscription.AckAsync(again[0]);
        }

        string g = $"group=\"slow\",topic=\"{topic}\"";
        var metrics = await ScrapeUntilAsync(m => m.GetValueOrDefault($"broker_messages_acked_total{{{g}}}") == 1);
        Assert.Equal(1, metrics[$"broker_leases_expired_total{{{g}}}"]);
        Assert.Equal(1, metrics[$"broker_messages_redelivered_total{{{g}}}"]);
        Assert.Equal(2, metrics[$"broker_messages_delivered_total{{{g}}}"]);
    }

    [Fact]
    public async Task The_oldest_unacknowledged_message_ages_while_it_waits()
    {
        string topic = await shared.NewTopicAsync("age");
        await shared.Client.CreateGroupAsync(topic, "slow");
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("waits")]);
        string g = $"group=\"slow\",topic=\"{topic}\"";
        var metrics = await ScrapeUntilAsync(m => m.GetValueOrDefault($"broker_group_oldest_unacked_age_seconds{{{g}}}") > 0);
        Assert.Equal(1, metrics[$"broker_group_backlog{{{g}}}"]);
        Assert.Equal(0, metrics[$"broker_group_consumers{{{g}}}"]);
    }

    [Fact]
    public async Task Health_is_answered_over_http_and_by_the_standard_grpc_health_service()
    {
        using var http = new HttpClient { BaseAddress = shared.Broker.Host.HttpAddress };
        var response = await http.GetAsync("/healthz");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("Healthy", await response.Content.ReadAsStringAsync());

        var health = new Health.HealthClient(shared.Client.Channel);
        var answer = await health.CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, answer.Status);
    }

    [Fact]
    public async Task Reflection_lists_the_broker_services_so_tools_need_no_proto_file()
    {
        var reflection = new ServerReflection.ServerReflectionClient(shared.Client.Channel);
        using var call = reflection.ServerReflectionInfo();
        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        await call.RequestStream.CompleteAsync();
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        var services = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();
        Assert.Superset(new HashSet<string> { "broker.v1.Publisher", "broker.v1.Consumer", "broker.v1.Admin", "grpc.health.v1.Health" },
            services.ToHashSet());
    }

    [Fact]
    public async Task Help_and_version_print_and_exit_without_starting_a_broker()
    {
        string folder = Directory.CreateTempSubdirectory("broker-help-").FullName;
        try
        {
            var (helpCode, help) = await RunServerAsync(folder, "--help");
            Assert.Equal(0, helpCode);
            Assert.Contains("usage: broker [options]", help);
            Assert.Contains("--http-port", help);
            var (versionCode, version) = await RunServerAsync(folder, "--version");
            Assert.Equal(0, versionCode);
            Assert.Matches(@"^broker \d+\.\d+\.\d+", version);
            Assert.Empty(Directory.EnumerateFileSystemEntries(folder));  // no ./data: nothing was started
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static async Task<(int ExitCode, string Output)> RunServerAsync(string workingDirectory, string argument)
    {
        string dotnet = Broker.Testing.BrokerChildProcess.DotnetHost;
        var start = new System.Diagnostics.ProcessStartInfo(dotnet)
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "Broker.Server.dll"), argument },
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var process = System.Diagnostics.Process.Start(start)!;
        string output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(Receive.Deadline);
        return (process.ExitCode, output);
    }

    /// <summary>Every sample of a scrape, keyed by name and labels without the scope label: name{a="1",b="2"}.</summary>
    private async Task<Dictionary<string, double>> ScrapeAsync()
    {
        using var http = new HttpClient { BaseAddress = shared.Broker.Host.HttpAddress };
        string text = await http.GetStringAsync("/metrics");
        var samples = new Dictionary<string, double>();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
                continue;
            var match = Sample().Match(line);
            if (!match.Success)
                continue;
            string labels = ScopeLabel().Replace(match.Groups["labels"].Value, "");
            string key = labels.Length == 0 ? match.Groups["name"].Value : $"{match.Groups["name"].Value}{{{labels}}}";
            samples[key] = double.Parse(match.Groups["value"].Value, CultureInfo.InvariantCulture);
        }
        return samples;
    }

    private async Task<Dictionary<string, double>> ScrapeUntilAsync(Func<Dictionary<string, double>, bool> condition)
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (true)
        {
            var metrics = await ScrapeAsync();
            if (condition(metrics))
                return metrics;
            await Task.Delay(50, deadline.Token);  // the next scrape, not a wait for correctness
        }
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (!await condition())
            await Task.Delay(20, deadline.Token);  // polling an outside view (a scrape), not waiting for correctness
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)")]
    private static partial Regex Sample();

    [GeneratedRegex(@"otel_scope_name=""[^""]*"",?")]
    private static partial Regex ScopeLabel();
}
