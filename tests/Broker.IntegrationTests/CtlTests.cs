using System.Diagnostics;
using System.Text.Json;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>brokerctl as a child process against the real broker: each command's output and exit code.</summary>
public sealed class CtlTests(SharedBroker shared) : IClassFixture<SharedBroker>
{
    private sealed record Run(int ExitCode, string Output, string Errors)
    {
        public JsonElement Json => JsonDocument.Parse(Output).RootElement;
        public List<JsonElement> JsonLines => Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
    }

    /// <summary>tools/Broker.Ctl/bin/CONFIGURATION/TFM/brokerctl.dll, beside this test project's own bin/CONFIGURATION/TFM.</summary>
    internal static string CtlDll()
    {
        string tests = Path.Combine("tests", "Broker.IntegrationTests", "bin") + Path.DirectorySeparatorChar;
        return Path.Combine(AppContext.BaseDirectory.Replace(tests, Path.Combine("tools", "Broker.Ctl", "bin") + Path.DirectorySeparatorChar, StringComparison.Ordinal), "brokerctl.dll");
    }

    private Task<Run> CtlAsync(string? input, params string[] arguments) =>
        CtlAsync(shared.Broker.Host.Address, null, input, arguments);

    private static async Task<Run> CtlAsync(Uri address, IReadOnlyDictionary<string, string>? environment, string? input, params string[] arguments)
    {
        var start = StartInfo(address, environment, arguments);
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(input ?? "");
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return new Run(process.ExitCode, await output, await errors);
    }

    private static ProcessStartInfo StartInfo(Uri address, IReadOnlyDictionary<string, string>? environment, string[] arguments)
    {
        var start = new ProcessStartInfo(Broker.Testing.BrokerChildProcess.DotnetHost)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
        };
        start.ArgumentList.Add(CtlDll());
        start.ArgumentList.Add("--address");
        start.ArgumentList.Add(address.ToString());
        start.Environment.Remove("BROKER_API_KEY");
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
            start.Environment[name] = value;
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        return start;
    }

    [Fact]
    public async Task Keys_are_created_listed_and_revoked_and_the_key_comes_from_a_file_or_the_environment()
    {
        await using var broker = await TestBroker.StartAsync(options => options.RequireApiKeys = true);
        string bootstrapFile = Path.Combine(broker.DataDirectory, "bootstrap.token");
        var address = broker.Host.Address;

        var anonymous = await CtlAsync(address, null, null, "topics", "list");
        Assert.Equal(1, anonymous.ExitCode);
        Assert.Contains("error 1300", anonymous.Errors);

        var created = await CtlAsync(address, null, null, "keys", "create", "reader", "--grant", "consume:jobs", "--grant", "admin:jobs", "--sqs",
            "--json", "--api-key-file", bootstrapFile);
        Assert.Equal(0, created.ExitCode);
        string token = created.Json.GetProperty("token").GetString()!;
        string id = created.Json.GetProperty("id").GetString()!;
        Assert.Equal(id, created.Json.GetProperty("awsAccessKeyId").GetString());
        Assert.Equal(token[(id.Length + 1)..], created.Json.GetProperty("awsSecretAccessKey").GetString());

        var asReader = new Dictionary<string, string> { ["BROKER_API_KEY"] = token };
        Assert.Equal(0, (await CtlAsync(address, asReader, null, "topics", "create", "jobs")).ExitCode);
        var refused = await CtlAsync(address, asReader, null, "topics", "create", "other");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("error 1301", refused.Errors);
        Assert.Equal(1, (await CtlAsync(address, asReader, null, "keys", "list")).ExitCode);

        var list = await CtlAsync(address, null, null, "keys", "list", "--json", "--api-key-file", bootstrapFile);
        Assert.Equal(["bootstrap", "reader"], list.Json.EnumerateArray().Select(key => key.GetProperty("name").GetString()));
        Assert.DoesNotContain(token[(id.Length + 1)..], list.Output);
        Assert.Contains("consume:jobs", (await CtlAsync(address, null, null, "keys", "list", "--api-key-file", bootstrapFile)).Output);

        Assert.Equal(0, (await CtlAsync(address, null, null, "keys", "revoke", id, "--api-key-file", bootstrapFile)).ExitCode);
        var revoked = await CtlAsync(address, asReader, null, "topics", "list");
        Assert.Equal(1, revoked.ExitCode);
        Assert.Contains("error 1300", revoked.Errors);
        var again = await CtlAsync(address, null, null, "keys", "revoke", id, "--api-key-file", bootstrapFile);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("error 1302", again.Errors);
    }

    private static string NewName(string prefix) => $"{prefix}-{Guid.NewGuid():N}";

    [Fact]
    public async Task Topics_are_created_listed_described_purged_and_deleted()
    {
        string topic = NewName("ctl");
        var created = await CtlAsync(null, "topics", "create", topic, "--json");
        Assert.Equal((0, true), (created.ExitCode, created.Json.GetProperty("created").GetBoolean()));
        Assert.Equal(1, (await CtlAsync(null, "topics", "create", topic)).ExitCode);   // exists: the broker refuses
        Assert.Equal(0, (await CtlAsync(null, "topics", "create", topic, "--if-not-exists")).ExitCode);

        var published = await CtlAsync("{\"n\":1}\n{\"n\":2}\n\n{\"n\":3}\n", "publish", topic);
        Assert.Equal(0, published.ExitCode);
        Assert.Contains($"published 3 message(s) to {topic} (offsets 0..2)", published.Output);

        var list = await CtlAsync(null, "topics", "list", "--json");
        var row = list.Json.EnumerateArray().Single(t => t.GetProperty("name").GetString() == topic);
        Assert.Equal((3, 3), (row.GetProperty("stored").GetInt32(), row.GetProperty("nextOffset").GetInt32()));
        Assert.Contains(topic, (await CtlAsync(null, "topics", "list")).Output);  // the table names it too

        var purged = await CtlAsync(null, "topics", "purge", topic, "--json");
        Assert.Equal(3, purged.Json.GetProperty("purged").GetInt32());
        Assert.Equal(0, (await CtlAsync(null, "topics", "delete", topic)).ExitCode);
        var gone = await CtlAsync(null, "topics", "describe", topic);
        Assert.Equal(1, gone.ExitCode);
        Assert.Contains("error 1001", gone.Errors);
    }

    [Fact]
    public async Task Consume_acks_unless_told_not_to_and_a_reset_replays_from_the_start()
    {
        string topic = await shared.NewTopicAsync("ctl-consume");
        string file = Path.GetTempFileName();
        await File.WriteAllLinesAsync(file, Enumerable.Range(0, 5).Select(i => $"{{\"item\":{i}}}"));
        Assert.Equal(0, (await CtlAsync(null, "publish", topic, "--file", file)).ExitCode);
        File.Delete(file);

        var peek = await CtlAsync(null, "consume", topic, "--group", "g", "--no-ack", "--idle", "1", "--json");
        Assert.Equal(Enumerable.Range(0, 5).Select(i => (i, $"{{\"item\":{i}}}")),
            peek.JsonLines.Select(m => (m.GetProperty("offset").GetInt32(), m.GetProperty("payload").GetString()!)));
        Assert.Equal(5UL, (await shared.Client.DescribeTopicAsync(topic)).Groups.Single(g => g.Name == "g").Backlog);

        var taken = await CtlAsync(null, "consume", topic, "--group", "g", "--count", "3");
        Assert.Equal(3, taken.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        var described = await CtlAsync(null, "topics", "describe", topic, "--json");
        Assert.Equal(3, described.Json.GetProperty("groups")[0].GetProperty("ackFloor").GetInt32());

        // A group's delivery rules: in full in the JSON, in one line in the table.
        await shared.Client.CreateGroupAsync(topic, "rules", options: new GroupOptions
        {
            OrderedByKey = true, PriorityLevels = 4, KeyPatterns = ["orders.#"],
            RedeliveryBackoff = new RedeliveryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10)),
        });
        var rules = (await CtlAsync(null, "topics", "describe", topic, "--json")).Json.GetProperty("groups").EnumerateArray()
            .Single(g => g.GetProperty("name").GetString() == "rules").GetProperty("settings");
        Assert.Equal((true, 4, "orders.#"), (rules.GetProperty("orderedByKey").GetBoolean(), rules.GetProperty("priorityLevels").GetInt32(),
            rules.GetProperty("filter").GetProperty("keyPatterns")[0].GetString()));
        string table = (await CtlAsync(null, "topics", "describe", topic)).Output;
        Assert.Contains("backoff 1 s…10 min ×2", table);
        Assert.Contains("ordered by key; 4 priority levels; only key orders.#", table);

        var reset = await CtlAsync(null, "groups", "reset", topic, "g", "--to", "earliest", "--json");
        Assert.Equal(0, reset.Json.GetProperty("ackFloor").GetInt32());
        Assert.Equal(5, (await CtlAsync(null, "consume", topic, "--group", "g", "--idle", "1", "--json")).JsonLines.Count);
        Assert.Equal(0, (await CtlAsync(null, "groups", "delete", topic, "g")).ExitCode);
        Assert.DoesNotContain((await shared.Client.DescribeTopicAsync(topic)).Groups, g => g.Name == "g");
    }

    [Fact]
    public async Task Groups_are_listed_across_topics_and_described_one_at_a_time()
    {
        string topic = await shared.NewTopicAsync("ctl-groups");
        string other = await shared.NewTopicAsync("ctl-groups-other");  // sorts after topic: a GUID's hex digits come before 'o'
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b"), OutgoingMessage.FromText("c")]);
        await shared.Client.CreateGroupAsync(topic, "workers", options: new GroupOptions { MaxDeliveries = 3, DeadLetterTopic = topic + "-dead" });
        await shared.Client.CreateGroupAsync(other, "audit");

        // Across topics (the shared broker has other tests' groups too: only these two topics' are looked at).
        var all = await CtlAsync(null, "groups", "list", "--json");
        Assert.Equal(0, all.ExitCode);
        Assert.Equal([(topic, "workers", 3, topic + "-dead"), (other, "audit", 0, other + ".dlq")],
            all.Json.GetProperty("groups").EnumerateArray()
                .Where(g => g.GetProperty("topic").GetString() is { } t && (t == topic || t == other))
                .Select(g => (g.GetProperty("topic").GetString(), g.GetProperty("group").GetString(), g.GetProperty("backlog").GetInt32(),
                    g.GetProperty("deadLetterTopic").GetString())));

        var filtered = await CtlAsync(null, "groups", "list", "--topic", other, "--json");
        Assert.Equal([(other, "audit")], filtered.Json.GetProperty("groups").EnumerateArray()
            .Select(g => (g.GetProperty("topic").GetString(), g.GetProperty("group").GetString())));
        var table = await CtlAsync(null, "groups", "list", "--topic", topic);
        Assert.Equal(0, table.ExitCode);
        Assert.Contains("dead letters to", table.Output);
        Assert.Contains("workers", table.Output);
        Assert.Contains(topic + "-dead", table.Output);
        Assert.DoesNotContain("audit", table.Output);

        var described = await CtlAsync(null, "groups", "describe", topic, "workers", "--json");
        Assert.Equal((0, "workers", 3, 3, topic + "-dead"), (described.ExitCode, described.Json.GetProperty("group").GetString(),
            described.Json.GetProperty("backlog").GetInt32(), described.Json.GetProperty("settings").GetProperty("maxDeliveries").GetInt32(),
            described.Json.GetProperty("deadLetterTopic").GetString()));
        var card = await CtlAsync(null, "groups", "describe", topic, "workers");
        Assert.Equal(0, card.ExitCode);
        Assert.Matches(@"backlog\s*[│|]\s*3\s", card.Output);
        Assert.Contains($"3 deliveries → {topic}-dead", card.Output);

        var noGroup = await CtlAsync(null, "groups", "describe", topic, "nobody");
        Assert.Equal(1, noGroup.ExitCode);
        Assert.Contains("NotFound (error 1009): group 'nobody'", noGroup.Errors);
        var noTopic = await CtlAsync(null, "groups", "list", "--topic", NewName("missing"));
        Assert.Equal(1, noTopic.ExitCode);
        Assert.Contains("error 1001", noTopic.Errors);
        Assert.Equal(2, (await CtlAsync(null, "groups", "describe", topic)).ExitCode);  // the group argument is missing
    }

    [Fact]
    public async Task Dead_letters_are_peeked_and_redriven_with_a_limit_and_a_target()
    {
        string topic = await shared.NewTopicAsync("ctl-dlq");
        string elsewhere = await shared.NewTopicAsync("ctl-dlq-target");
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("bad"), OutgoingMessage.FromText("worse")]);
        await using (var subscription = await shared.Client.SubscribeAsync(topic, "workers"))
        {
            var messages = await Receive.ExactlyAsync(subscription, 2);
            await subscription.DeadLetterAsync(messages, "broken");
        }
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while ((await shared.Client.DescribeTopicAsync(topic + ".dlq")).NextOffset < 2)
            await Task.Delay(20, deadline.Token);  // the dead letters' routing, awaited by polling the broker

        // Peeked, with their story, and not taken: peeking twice shows them twice, and the redrive still finds them.
        var table = await CtlAsync(null, "dlq", "peek", topic + ".dlq");
        Assert.Equal(0, table.ExitCode);
        Assert.Contains("broken", table.Output);
        Assert.Contains(topic, table.Output);
        var peeked = await CtlAsync(null, "dlq", "peek", topic + ".dlq", "--json");
        var letter = peeked.Json[0];
        Assert.Equal(("bad", "broken", 0), (letter.GetProperty("payload").GetString(),
            letter.GetProperty("headers").GetProperty("broker-dlq-reason").GetString(), letter.GetProperty("offset").GetInt32()));
        Assert.Equal(2, peeked.Json.GetArrayLength());
        Assert.Empty(await shared.Client.PeekAsync(topic + ".dlq", fromOffset: 2));

        // One to another topic, then the rest back where they came from.
        var limited = await CtlAsync(null, "dlq", "redrive", topic + ".dlq", "--limit", "1", "--to", elsewhere);
        Assert.Equal((0, $"redrove 1 message(s) from {topic}.dlq; 0 skipped"), (limited.ExitCode, limited.Output.Trim()));
        Assert.Equal(1UL, (await shared.Client.DescribeTopicAsync(elsewhere)).NextOffset);
        var redriven = await CtlAsync(null, "dlq", "redrive", topic + ".dlq", "--json");
        Assert.Equal((0, 1), (redriven.ExitCode, redriven.Json.GetProperty("moved").GetInt32()));
        Assert.Equal(3UL, (await shared.Client.DescribeTopicAsync(topic)).NextOffset);
    }

    [Fact]
    public async Task Stats_shows_the_servers_process_numbers()
    {
        var json = await CtlAsync(null, "stats", "--json");
        Assert.Equal(0, json.ExitCode);
        Assert.True(ulong.Parse(json.Json.GetProperty("uptimeMs").GetString()!) > 0);
        Assert.True(ulong.Parse(json.Json.GetProperty("workingSetBytes").GetString()!) > 0);
        var table = await CtlAsync(null, "stats");
        Assert.Equal(0, table.ExitCode);
        Assert.Contains("workingSetBytes", table.Output);
        Assert.Contains("threadPoolThreads", table.Output);
    }

    [Fact]
    public async Task Tail_follows_new_messages_without_a_group_until_its_count_or_ctrl_c()
    {
        string topic = await shared.NewTopicAsync("ctl-tail");
        await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("a"), OutgoingMessage.FromText("b"), OutgoingMessage.FromText("c")]);

        // The last two, then two published while it follows, then it stops by itself at --count.
        using (var tail = Process.Start(StartInfo(shared.Broker.Host.Address, null, ["tail", topic, "--last", "2", "--count", "4", "--json"]))!)
        {
            var lines = new List<JsonElement> { await NextJsonLineAsync(tail), await NextJsonLineAsync(tail) };
            await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("d"), OutgoingMessage.FromText("e")]);
            lines.Add(await NextJsonLineAsync(tail));
            lines.Add(await NextJsonLineAsync(tail));
            await tail.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(0, tail.ExitCode);
            Assert.Equal([(1, "b"), (2, "c"), (3, "d"), (4, "e")], lines.Select(l => (l.GetProperty("offset").GetInt32(), l.GetProperty("payload").GetString()!)));
        }

        // Without --count it follows until Ctrl+C (SIGINT), which ends it with 0; the table format is offset, tab, payload.
        using (var tail = Process.Start(WithSigintDefault(StartInfo(shared.Broker.Host.Address, null, ["tail", topic, "--from", "5"])))!)
        {
            await shared.Client.PublishAsync(topic, [OutgoingMessage.FromText("f")]);
            Assert.Equal("5\tf", await tail.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(0, Interrupt(tail.Id));
            await tail.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(0, tail.ExitCode);
        }

        // Nothing was taken: no group was created, so no backlog is held anywhere.
        Assert.Empty((await shared.Client.DescribeTopicAsync(topic)).Groups);
    }

    private static async Task<JsonElement> NextJsonLineAsync(Process process) =>
        JsonDocument.Parse(await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) ?? "null").RootElement;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    private static int Interrupt(int pid) => Kill(pid, 2);  // SIGINT, what Ctrl+C sends

    // A job started in the background by a non-interactive shell (as CI runs this suite) has SIGINT ignored, children
    // inherit that across exec, and a runtime leaves an ignored SIGINT ignored: the tail would never see the Ctrl+C.
    // coreutils' env resets it to the default first, as a terminal would have it.
    private static ProcessStartInfo WithSigintDefault(ProcessStartInfo start)
    {
        var arguments = start.ArgumentList.ToList();
        start.ArgumentList.Clear();
        start.ArgumentList.Add("--default-signal=INT");
        start.ArgumentList.Add(start.FileName);
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        start.FileName = "env";
        return start;
    }

    [Fact]
    public async Task Bad_usage_exits_2_and_names_the_problem()
    {
        var unknown = await CtlAsync(null, "topics", "bogus");
        Assert.Equal(2, unknown.ExitCode);
        Assert.Contains("bogus", unknown.Errors);
        var badReset = await CtlAsync(null, "groups", "reset", "t", "g", "--to", "yesterday-ish");
        Assert.Equal(2, badReset.ExitCode);
        Assert.Contains("--to must be", badReset.Errors);
    }
}
