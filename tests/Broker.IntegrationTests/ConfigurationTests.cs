using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>The broker process reads a JSON config file, then BROKER_* variables, then the command line.</summary>
public sealed class ConfigurationTests : IDisposable
{
    private readonly string _folder = TestBroker.NewDataDirectory();

    public void Dispose()
    {
        if (Directory.Exists(_folder))
            Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public async Task File_environment_and_command_line_are_layered_in_that_order()
    {
        Directory.CreateDirectory(_folder);
        string data = Path.Combine(_folder, "from-file");
        string config = Path.Combine(_folder, "broker.json");
        // The file sets the data folder, a port that the command line overrides, and a size the environment overrides.
        await File.WriteAllTextAsync(config, $$"""{ "DataDirectory": "{{data.Replace("\\", "\\\\")}}", "Port": 1, "MaxMessageBytes": 100000 }""");

        using var broker = await BrokerProcess.StartAsync(["--config", config, "--port", "0"],
            new Dictionary<string, string> { ["BROKER_MAXMESSAGEBYTES"] = "1000" });
        using var client = new BrokerClient(broker.Address);
        await client.CreateTopicAsync("configured");

        Assert.True(Directory.Exists(Path.Combine(data, "topics", "configured")));
        await client.PublishAsync("configured", [new OutgoingMessage(new byte[1000])]);
        var tooLarge = await Assert.ThrowsAsync<BrokerClientException>(() => client.PublishAsync("configured", [new OutgoingMessage(new byte[1001])]));
        Assert.Equal(StatusCode.InvalidArgument, tooLarge.Status);
        Assert.Equal(1004, tooLarge.ErrorCode);
    }

    [Fact]
    public async Task Json_logs_at_the_configured_level_carry_the_shutdown_phases_as_json_objects()
    {
        using var broker = await BrokerProcess.StartAsync(_folder, "--LogFormat", "json", "--LogLevel", "Information");
        broker.Terminate();
        Assert.Equal(0, await broker.WaitForExitAsync(Receive.Deadline));
        var events = broker.Output.Where(line => line.StartsWith('{'))
            .Select(line => System.Text.Json.JsonDocument.Parse(line).RootElement).ToList();
        Assert.Contains(events, e => e.GetProperty("EventId").GetInt32() is >= 2301 and <= 2306
                                     && e.GetProperty("LogLevel").GetString() == "Information");
        Assert.DoesNotContain(broker.Output, line => line.Contains(": Broker.Server.Hosting.ShutdownDrain[", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Startup_prints_version_addresses_data_folder_topics_found_and_start_time_and_a_topics_recovery_is_logged()
    {
        using (var first = await BrokerProcess.StartAsync(_folder))
        {
            using var client = new BrokerClient(first.Address);
            await client.CreateTopicAsync("recovered");
            await client.PublishAsync("recovered", [OutgoingMessage.FromText("one"), OutgoingMessage.FromText("two")]);
            await client.CreateGroupAsync("recovered", "workers");
            first.Terminate();
            Assert.Equal(0, await first.WaitForExitAsync(Receive.Deadline));
        }

        // At the default level (Warning) too: recoveries are lifecycle lines, like the shutdown's phases.
        using var broker = await BrokerProcess.StartAsync(_folder);
        Assert.EndsWith($"(data: {Path.GetFullPath(_folder)})", await broker.WaitForLineAsync("broker listening on http://127.0.0.1:", Receive.Deadline));
        Assert.Contains("(metrics: /metrics, health: /healthz)", await broker.WaitForLineAsync("broker http on http://127.0.0.1:", Receive.Deadline));
        string started = await broker.WaitForLineAsync("topic(s) found", Receive.Deadline);
        // Two: the topic and the dead-letter topic its group got.
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(started, @"^broker \d+\.\d+\.\d+\S*: 2 topic\(s\) found, started in \d+ ms"), started);

        using var again = new BrokerClient(broker.Address);
        await again.DescribeTopicAsync("recovered");  // first use: the topic recovers now
        string recovered = await broker.WaitForLineAsync("Topic recovered recovered in", Receive.Deadline);
        Assert.Matches(@"\[3014\].*Topic recovered recovered in \d+ ms: next offset 2, 1 group\(s\): workers", recovered);
    }

    [Theory]
    [InlineData("--LogFormat", "xml", "LogFormat must be simple or json")]
    [InlineData("--http-port", "-2", "HttpPort must be between 0 and 65535")]
    public async Task A_bad_log_format_or_http_port_is_refused_by_name(string option, string value, string message)
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            BrokerProcess.StartAsync(["--port", "0", "--data", _folder, option, value], new Dictionary<string, string>()));
        Assert.Contains(message, error.Message);
    }

    [Fact]
    public async Task Appsettings_next_to_the_binary_are_read_first_and_the_command_line_wins_over_them()
    {
        // A deployment: the server's files in a folder of their own, with an appsettings.json beside them.
        string install = Path.Combine(_folder, "install");
        Directory.CreateDirectory(install);
        foreach (string file in Directory.EnumerateFiles(AppContext.BaseDirectory))
            File.Copy(file, Path.Combine(install, Path.GetFileName(file)));
        string data = Path.Combine(_folder, "data-from-appsettings");
        var settings = new Dictionary<string, object> { ["DataDirectory"] = data, ["MaxMessageBytes"] = 2000, ["Port"] = 1 };
        await File.WriteAllTextAsync(Path.Combine(install, "appsettings.json"), System.Text.Json.JsonSerializer.Serialize(settings));

        using var broker = await BrokerProcess.StartAsync(["--port", "0"], new Dictionary<string, string>(),
            serverDll: Path.Combine(install, "Broker.Server.dll"));
        using var client = new BrokerClient(broker.Address);
        await client.CreateTopicAsync("from-appsettings");
        Assert.True(Directory.Exists(Path.Combine(data, "topics", "from-appsettings")));
        await client.PublishAsync("from-appsettings", [new OutgoingMessage(new byte[2000])]);
        var tooLarge = await Assert.ThrowsAsync<BrokerClientException>(() =>
            client.PublishAsync("from-appsettings", [new OutgoingMessage(new byte[2001])]));
        Assert.Equal(1004, tooLarge.ErrorCode);
    }

    [Fact]
    public async Task An_invalid_setting_stops_the_broker_with_a_clear_message()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            BrokerProcess.StartAsync(["--port", "0", "--data", _folder, "--host", "not-an-ip"], new Dictionary<string, string>()));
        Assert.Contains("Host must be an IP address", error.Message);
    }
}
