// Starts one real OpenSearch node in-process via codelibs' OpenSearchRunner and keeps it alive until the
// JVM is signalled. A wrapper instead of OpenSearchRunner.main() because main() exits with status 1 and
// swallows the cause on any start failure, and caps the HTTP port at 9299.
// Usage: java -cp 'lib/*' RaysparseNode.java <runner args: -basePath DIR -numOfNode 1 -baseHttpPort N-1 ...>
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class RaysparseNode {
    public static void main(String[] args) throws Exception {
        OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(65535);
        // single-node discovery: without it, two nodes on one host (CI's and a test's) find each other on the
        // transport ports 9300-9305 and merge into one cluster. Transport binds to loopback only.
        runner.onBuild((number, settings) -> {
            settings.put("discovery.type", "single-node");
            settings.put("network.host", "127.0.0.1");
            // extra node settings from scripts/opensearch.sh (ml-commons' for --with-ml, TLS and security for
            // --secure), one key=value a line; key[]=value lines add to a list setting (values may hold commas,
            // e.g. certificate DNs, so a list is never split on them)
            String extra = System.getenv("RAYSPARSE_NODE_SETTINGS");
            java.util.Map<String, java.util.List<String>> lists = new java.util.LinkedHashMap<>();
            if (extra != null) {
                for (String line : extra.split("\n")) {
                    int eq = line.indexOf('=');
                    if (eq <= 0) {
                        continue;
                    }
                    String key = line.substring(0, eq).trim();
                    String value = line.substring(eq + 1).trim();
                    if (key.endsWith("[]")) {
                        lists.computeIfAbsent(key.substring(0, key.length() - 2), k -> new java.util.ArrayList<>()).add(value);
                    } else {
                        settings.put(key, value);
                    }
                }
            }
            lists.forEach(settings::putList);
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));
        try {
            runner.build(args);
        } catch (Throwable t) {
            System.err.println("raysparse: OpenSearch node failed to start");
            t.printStackTrace();
            System.exit(3);
        }
        System.out.println("raysparse: OpenSearch node started");
        while (!runner.isClosed()) {
            Thread.sleep(5000);
        }
    }
}
